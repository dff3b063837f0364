"""Links by mouse on the first-start txt2img graph: disconnect, reconnect, move a link to another
input, refuse incompatible drops, and a link released on empty canvas opens the search for its type."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.loom_editor import Editor, sockets_of_type

pytestmark = pytest.mark.browser


def test_disconnect_reconnect_and_move_links(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    positive = editor.input_link(sampler, "positive")
    assert positive is not None
    encoder = positive["origin_id"]
    links_before = len(editor.links())

    # Drag the link off the input and drop it on empty canvas: it is gone.
    editor.drag(editor.slot_point(sampler, "input", editor.input_slot(sampler, "positive")), editor.empty_point())
    search = editor.page.get_by_test_id("search-dialog")
    if search.is_visible():  # releasing a link may offer the search; dismissing it keeps the link removed
        editor.press("Escape")
        expect(search).to_be_hidden()
    assert editor.input_link(sampler, "positive") is None
    assert len(editor.links()) == links_before - 1
    assert all(link["origin_id"] != encoder or link["target_id"] != sampler for link in editor.links())

    # Reconnect it from the encoder's output.
    editor.connect(encoder, 0, sampler, "positive")
    link = editor.input_link(sampler, "positive")
    assert link is not None and (link["origin_id"], link["origin_slot"]) == (encoder, 0)
    assert len(editor.links()) == links_before

    # Pick the negative link up at its input and drop it on the positive input: it moves there.
    negative = editor.input_link(sampler, "negative")
    assert negative is not None
    editor.drag(
        editor.slot_point(sampler, "input", editor.input_slot(sampler, "negative")),
        editor.slot_point(sampler, "input", editor.input_slot(sampler, "positive")),
    )
    moved = editor.input_link(sampler, "positive")
    assert moved is not None and moved["origin_id"] == negative["origin_id"]
    assert editor.input_link(sampler, "negative") is None
    assert len(editor.links()) == links_before - 1


def test_incompatible_drop_is_refused(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    latent = editor.node_of_type("EmptyLatentImage")
    decode = editor.node_of_type("VAEDecode")
    before = editor.state()
    # LATENT onto MODEL, LATENT onto VAE, and MODEL output onto an IMAGE input.
    editor.connect(latent, 0, sampler, "model")
    editor.connect(latent, 0, decode, "vae")
    editor.connect(editor.node_of_type("CheckpointLoaderSimple"), 0, editor.node_of_type("SaveImage"), "images")
    assert editor.state() == before, "an incompatible link drop changed the graph"


def test_link_released_on_empty_canvas_opens_filtered_search(editor: Editor) -> None:
    ckpt = editor.node_of_type("CheckpointLoaderSimple")
    vae_slot = 2
    assert editor.node(ckpt)["outputs"][vae_slot]["type"] == "VAE"
    before = editor.node_ids()
    editor.drag(editor.slot_point(ckpt, "output", vae_slot), editor.empty_point())
    expect(editor.page.get_by_test_id("search-dialog")).to_be_visible()
    expect(editor.page.get_by_test_id("search-input")).to_be_focused()
    results = editor.page.get_by_test_id("search-result")
    expect(results.first).to_be_visible()
    types = results.evaluate_all("(items) => items.map((i) => i.dataset.type)")
    info = editor.object_info()
    wrong = [t for t in types if not sockets_of_type(info, t, "VAE")]
    assert not wrong, f"the search for a VAE link offers nodes without a VAE input: {wrong}"
    assert "VAEDecode" in types and "VAEEncode" in types
    editor.shot("search-dialog-filtered")
    editor.page.keyboard.type("vae encode")
    expect(results.first).to_have_attribute("data-type", "VAEEncode")
    editor.press("Enter")
    added = editor.node_ids() - before
    assert len(added) == 1
    new = added.pop()
    assert editor.node(new)["type"] == "VAEEncode"
    link = editor.input_link(new, "vae")
    assert link is not None and (link["origin_id"], link["origin_slot"]) == (ckpt, vae_slot)


def test_double_click_search_fuzzy_matches_name_category_and_type(editor: Editor) -> None:
    editor.page.mouse.dblclick(*editor.empty_point())
    results = editor.page.get_by_test_id("search-result")
    editor.page.keyboard.type("ksmplr")  # a fuzzy name
    expect(results.first).to_have_attribute("data-type", "KSampler")
    editor.shot("search-dialog")
    editor.press("Control+A")
    editor.page.keyboard.type("CONDITIONING")  # a type name: nodes taking or giving conditioning
    expect(results.first).to_be_visible()
    types = results.evaluate_all("(items) => items.map((i) => i.dataset.type)")
    assert "CLIPTextEncode" in types and "KSampler" in types, types
    editor.press("Escape")
    expect(editor.page.get_by_test_id("search-dialog")).to_be_hidden()
