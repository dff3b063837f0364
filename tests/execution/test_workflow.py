"""UI workflow -> API prompt conversion (execution/workflow.py), against hand-written real-shape workflows."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from core.errors import GraphError, WorkflowError
from core.spec import InputSpec, NodeSpec
from execution.workflow import is_ui_workflow, workflow_to_prompt
from nodes.compat import v1_definitions

FIXTURES = Path(__file__).parent / "workflows"

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde"]
SCHEDULERS = ["normal", "karras", "exponential", "simple"]
CHECKPOINTS = ["dreamshaper_8.safetensors", "juggernautXL_v9.safetensors", "v1-5-pruned-emaonly-fp16.safetensors"]
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})


# --- V1 stubs with the INPUT_TYPES of ComfyUI's core nodes (only the declarations matter here) ---


class _Stub:
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, **kwargs: Any) -> tuple[Any, ...]:
        raise AssertionError("conversion never runs nodes")


class CheckpointLoaderSimple(_Stub):
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (CHECKPOINTS, {"tooltip": "The checkpoint to load."})}}


class CLIPTextEncode(_Stub):
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}


class EmptyLatentImage(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 16, "max": 16384, "step": 8}
        return {
            "required": {
                "width": ("INT", size),
                "height": ("INT", size),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }


class KSampler(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "seed": SEED,
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": (SAMPLERS,),
                "scheduler": (SCHEDULERS,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }


class KSamplerAdvanced(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "add_noise": (["enable", "disable"],),
                "noise_seed": SEED,
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
                "sampler_name": (SAMPLERS,),
                "scheduler": (SCHEDULERS,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
                "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
                "return_with_leftover_noise": (["disable", "enable"],),
            }
        }


class VAEDecode(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}


class VAEEncode(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}


class SaveImage(_Stub):
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }


class PreviewImage(_Stub):
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class LoraLoader(_Stub):
    RETURN_TYPES = ("MODEL", "CLIP")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01})
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "lora_name": (["add_detail.safetensors", "film_grain_style.safetensors"],),
                "strength_model": strength,
                "strength_clip": strength,
            }
        }


class LoadImage(_Stub):
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (["example.png", "photo.jpg"], {"image_upload": True})}}


class ImageScale(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 0, "max": 16384, "step": 1}
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
                "width": ("INT", size),
                "height": ("INT", size),
                "crop": (["disabled", "center"],),
            }
        }


class PrimitiveInt(_Stub):
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"min": -(2**63), "max": 2**63 - 1, "control_after_generate": True})}}


class PrimitiveString(_Stub):
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("STRING",)}}


NODE_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        CheckpointLoaderSimple,
        CLIPTextEncode,
        EmptyLatentImage,
        KSampler,
        KSamplerAdvanced,
        VAEDecode,
        VAEEncode,
        SaveImage,
        PreviewImage,
        LoraLoader,
        LoadImage,
        ImageScale,
        PrimitiveInt,
        PrimitiveString,
    )
}
DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image",
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoraLoader": "Load LoRA",
    "LoadImage": "Load Image",
    "ImageScale": "Upscale Image",
    "PrimitiveInt": "Int",
    "PrimitiveString": "String",
}
REGISTRY = v1_definitions(NODE_CLASSES, DISPLAY_NAMES)


def lookup(class_type: str) -> NodeSpec | None:
    definition = REGISTRY.get(class_type)
    return definition.spec() if definition is not None else None


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def convert(workflow: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    return workflow_to_prompt(workflow, lookup, **kwargs)


def find(nodes: list[dict[str, Any]], node_id: int) -> dict[str, Any]:
    return next(node for node in nodes if node["id"] == node_id)


DEFAULT_PROMPT = {
    "3": {
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
        "class_type": "KSampler",
        "_meta": {"title": "KSampler"},
    },
    "4": {
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
        "class_type": "CheckpointLoaderSimple",
        "_meta": {"title": "Load Checkpoint"},
    },
    "5": {
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
        "class_type": "EmptyLatentImage",
        "_meta": {"title": "Empty Latent Image"},
    },
    "6": {
        "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
            "clip": ["4", 1],
        },
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    },
    "7": {
        "inputs": {"text": "text, watermark", "clip": ["4", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    },
    "8": {
        "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
        "class_type": "VAEDecode",
        "_meta": {"title": "VAE Decode"},
    },
    "9": {
        "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
        "class_type": "SaveImage",
        "_meta": {"title": "Save Image"},
    },
}


# --- format detection ---


def test_is_ui_workflow_tells_workflows_from_api_prompts() -> None:
    assert is_ui_workflow(load("default_txt2img_v04.json"))
    assert is_ui_workflow(load("default_txt2img_v1.json"))
    assert not is_ui_workflow(DEFAULT_PROMPT)
    assert not is_ui_workflow({"nodes": {"class_type": "KSampler", "inputs": {}}})  # an API node named "nodes"
    assert not is_ui_workflow([{"nodes": []}])
    assert not is_ui_workflow(None)


def test_an_api_prompt_is_rejected_with_a_hint() -> None:
    with pytest.raises(WorkflowError, match="no 'nodes' list"):
        convert(DEFAULT_PROMPT)


# --- the default workflow in both schemas ---


def test_default_workflow_v04_converts_exactly() -> None:
    prompt = convert(load("default_txt2img_v04.json"))
    assert prompt == DEFAULT_PROMPT
    # execution order (the saved `order`), not file order
    assert list(prompt) == ["5", "4", "6", "7", "3", "8", "9"]
    assert json.loads(json.dumps(prompt)) == prompt  # plain JSON, ready for POST /prompt


def test_default_workflow_v1_converts_to_the_same_prompt() -> None:
    # link objects, a native reroute on the VAE link, and unlinked widget-input slots on every node
    assert convert(load("default_txt2img_v1.json")) == DEFAULT_PROMPT


def test_workflow_is_not_modified() -> None:
    workflow = load("subgraphs_v1.json")
    before = copy.deepcopy(workflow)
    convert(workflow)
    assert workflow == before


# --- reroutes ---


def test_legacy_reroute_nodes_are_followed_to_the_real_origin() -> None:
    prompt = convert(load("reroutes_v04.json"))
    assert set(prompt) == {"1", "2", "3", "4", "5", "6", "7"}  # Reroute nodes 10, 11, 12 are not emitted
    assert prompt["5"]["inputs"]["model"] == ["1", 0]  # through two chained reroutes
    assert prompt["6"]["inputs"]["vae"] == ["1", 2]
    # native reroutes (extra.reroutes + linkExtensions) never change origin or target
    assert prompt["5"]["inputs"]["positive"] == ["2", 0]
    assert prompt["2"]["_meta"] == {"title": "Positive"}
    assert prompt["5"]["inputs"]["seed"] == 42 and prompt["5"]["inputs"]["scheduler"] == "karras"


def test_a_reroute_with_nothing_plugged_in_leaves_the_socket_empty() -> None:
    workflow = load("reroutes_v04.json")
    find(workflow["nodes"], 12)["inputs"][0]["link"] = None
    prompt = convert(workflow)
    assert "vae" not in prompt["6"]["inputs"]
    assert prompt["6"]["inputs"]["samples"] == ["5", 0]


def test_a_long_reroute_chain_resolves_without_recursion() -> None:
    workflow = load("reroutes_v04.json")
    nodes, links = workflow["nodes"], workflow["links"]
    links[:] = [link for link in links if link[0] != 6]  # reroute 11 -> KSampler model
    previous, link_id = 11, 1000
    for node_id in range(1000, 11000):  # 10,000 more reroutes after reroute 11
        nodes.append(
            {"id": node_id, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": link_id}]}
        )
        links.append([link_id, previous, 0, node_id, 0, "MODEL"])
        previous, link_id = node_id, link_id + 1
    links.append([link_id, previous, 0, 5, 0, "MODEL"])
    find(nodes, 5)["inputs"][0]["link"] = link_id
    prompt = convert(workflow)
    assert prompt["5"]["inputs"]["model"] == ["1", 0]
    assert len(prompt) == 7


def test_a_reroute_loop_is_an_error_not_a_hang() -> None:
    workflow = load("reroutes_v04.json")
    # reroute 10 now reads from reroute 11, which reads from reroute 10
    workflow["links"].append([50, 11, 0, 10, 0, "*"])
    find(workflow["nodes"], 10)["inputs"][0]["link"] = 50
    with pytest.raises(WorkflowError, match=r"node 5 input 'model': its links loop back on themselves at node 1[01] "):
        convert(workflow)


# --- primitives ---


def test_primitive_nodes_become_constants_of_every_input_they_feed() -> None:
    prompt = convert(load("primitives_v04.json"))
    assert "20" not in prompt and "21" not in prompt and "23" not in prompt and "24" not in prompt
    # one PrimitiveNode feeds both width and height; batch_size keeps its own widget value
    assert prompt["4"]["inputs"] == {"width": 768, "height": 768, "batch_size": 2}
    # the KSampler's own saved seed (999) is overridden by the primitive feeding the converted widget
    assert prompt["5"]["inputs"]["seed"] == 123456789
    # through a Reroute too
    assert prompt["7"]["inputs"]["filename_prefix"] == "sailors/portrait"


def test_core_primitive_nodes_are_real_nodes() -> None:
    prompt = convert(load("primitives_v04.json"))
    assert prompt["22"] == {"inputs": {"value": 30}, "class_type": "PrimitiveInt", "_meta": {"title": "Int"}}
    assert prompt["5"]["inputs"]["steps"] == ["22", 0]  # a widget converted to an input takes its link
    assert prompt["5"]["inputs"]["cfg"] == 6.5  # the other widgets stay positional around the control value


def test_widget_input_linked_to_a_real_node_uses_the_link() -> None:
    workflow = load("default_txt2img_v1.json")
    workflow["nodes"].append(
        {
            "id": 10,
            "type": "PrimitiveString",
            "order": 0,
            "mode": 0,
            "outputs": [{"name": "STRING", "type": "STRING", "links": [10]}],
            "widgets_values": ["a cabin in the woods"],
        }
    )
    workflow["links"].append(
        {"id": 10, "origin_id": 10, "origin_slot": 0, "target_id": 6, "target_slot": 1, "type": "STRING"}
    )
    find(workflow["nodes"], 6)["inputs"][1]["link"] = 10
    prompt = convert(workflow)
    assert prompt["6"]["inputs"] == {"text": ["10", 0], "clip": ["4", 1]}
    assert prompt["10"]["inputs"] == {"value": "a cabin in the woods"}


# --- modes ---


def test_bypassed_nodes_are_routed_around_through_chains() -> None:
    prompt = convert(load("bypass_mute_v04.json"))
    assert "2" not in prompt and "3" not in prompt and "16" not in prompt and "17" not in prompt
    # two bypassed LoraLoaders in a row: each output k is replaced by its input k
    assert prompt["7"]["inputs"]["model"] == ["1", 0]
    assert prompt["4"]["inputs"]["clip"] == ["1", 1]
    assert prompt["5"]["inputs"]["clip"] == ["1", 1]
    # a bypassed KSampler: output 0 (LATENT) does not match input 0 (MODEL); its first LATENT input is used
    assert prompt["8"]["inputs"]["samples"] == ["7", 0]


def test_bypass_prefers_the_input_at_the_same_index() -> None:
    # A bypassed ControlNetApplyAdvanced (positive, negative, control_net, image -> positive, negative):
    # output 1 must map to input 1, although input 0 has the same type.
    workflow = load("bypass_mute_v04.json")
    workflow["nodes"].append(
        {
            "id": 30,
            "type": "ControlNetApplyAdvanced",
            "order": 5,
            "mode": 4,
            "inputs": [
                {"name": "positive", "type": "CONDITIONING", "link": 30},
                {"name": "negative", "type": "CONDITIONING", "link": 31},
                {"name": "control_net", "type": "CONTROL_NET", "link": None},
                {"name": "image", "type": "IMAGE", "link": None},
            ],
            "outputs": [
                {"name": "positive", "type": "CONDITIONING", "links": [32]},
                {"name": "negative", "type": "CONDITIONING", "links": [33]},
            ],
            "widgets_values": [0.8, 0, 1],
        }
    )
    workflow["links"] += [
        [30, 4, 0, 30, 0, "CONDITIONING"],
        [31, 5, 0, 30, 1, "CONDITIONING"],
        [32, 30, 0, 7, 1, "CONDITIONING"],
        [33, 30, 1, 7, 2, "CONDITIONING"],
    ]
    sampler = find(workflow["nodes"], 7)
    sampler["inputs"][1]["link"], sampler["inputs"][2]["link"] = 32, 33
    prompt = convert(workflow)  # the type is not installed, but a bypassed node needs no spec
    assert prompt["7"]["inputs"]["positive"] == ["4", 0]
    assert prompt["7"]["inputs"]["negative"] == ["5", 0]


def test_bypassed_node_without_a_matching_input_drops_the_input() -> None:
    prompt = convert(load("bypass_mute_v04.json"))
    # node 17 is a bypassed VAEDecode (LATENT, VAE -> IMAGE): nothing can stand in for its IMAGE
    assert prompt["18"] == {"inputs": {}, "class_type": "PreviewImage", "_meta": {"title": "Preview Image"}}


def test_muted_nodes_are_dropped_with_their_links() -> None:
    prompt = convert(load("bypass_mute_v04.json"))
    assert "10" not in prompt and "12" not in prompt  # muted ImageScale and muted SaveImage
    assert prompt["11"]["inputs"] == {}  # its consumer loses the input
    assert prompt["9"]["inputs"] == {"filename_prefix": "castle", "images": ["8", 0]}


def test_notes_are_never_emitted() -> None:
    prompt = convert(load("bypass_mute_v04.json"))
    assert "13" not in prompt and "14" not in prompt
    assert set(prompt) == {"1", "4", "5", "6", "7", "8", "9", "11", "18"}


def test_a_muted_node_feeding_a_converted_widget_removes_the_widget_value_too() -> None:
    # The frontend writes the link, then deletes every input that points at a removed node.
    workflow = load("primitives_v04.json")
    find(workflow["nodes"], 22)["mode"] = 2
    prompt = convert(workflow)
    assert "22" not in prompt
    assert "steps" not in prompt["5"]["inputs"]
    assert prompt["5"]["inputs"]["cfg"] == 6.5


def test_a_bypass_that_finds_nothing_keeps_a_widget_s_own_value() -> None:
    # A bypassed PrimitiveInt has no inputs, so nothing replaces its output: the widget keeps its value.
    workflow = load("primitives_v04.json")
    find(workflow["nodes"], 22)["mode"] = 4
    prompt = convert(workflow)
    assert prompt["5"]["inputs"]["steps"] == 20


# --- widget values ---


def test_load_image_upload_value_is_skipped() -> None:
    prompt = convert(load("img2img_v04.json"))
    assert prompt["2"] == {
        "inputs": {"image": "example.png"},
        "class_type": "LoadImage",
        "_meta": {"title": "Load Image"},
    }
    assert prompt["3"]["inputs"] == {
        "upscale_method": "lanczos",
        "width": 768,
        "height": 512,
        "crop": "center",
        "image": ["2", 0],
    }


def test_upload_value_follows_the_last_required_widget() -> None:
    # LoadImageMask saves ["mask.png", "alpha", "image"]: the frontend appends its upload button
    # after every required input, so "image" is not the channel.
    spec = NodeSpec(
        id="LoadImageMask",
        inputs=(
            _input("image", "COMBO", choices=("mask.png",), image_upload=True),
            _input("channel", "COMBO", choices=("alpha", "red", "green", "blue")),
        ),
    )
    lookup_mask = {"LoadImageMask": spec}.get
    saved = _single_node_workflow("LoadImageMask", ["mask.png", "alpha", "image"])
    assert workflow_to_prompt(saved, lookup_mask)["1"]["inputs"] == {"image": "mask.png", "channel": "alpha"}
    newer = _single_node_workflow("LoadImageMask", ["mask.png", "red"])  # a frontend that does not save it
    assert workflow_to_prompt(newer, lookup_mask)["1"]["inputs"] == {"image": "mask.png", "channel": "red"}


def test_noise_seed_control_value_is_skipped() -> None:
    prompt = convert(load("img2img_v04.json"))
    widgets = {key: value for key, value in prompt["7"]["inputs"].items() if not isinstance(value, list)}
    assert widgets == {
        "add_noise": "enable",
        "noise_seed": 8566257,
        "steps": 20,
        "cfg": 8,
        "sampler_name": "euler",
        "scheduler": "normal",
        "start_at_step": 8,
        "end_at_step": 10000,
        "return_with_leftover_noise": "disable",
    }


def test_missing_control_value_is_tolerated() -> None:
    workflow = load("default_txt2img_v04.json")
    find(workflow["nodes"], 3)["widgets_values"] = [7, 20, 8, "euler", "normal", 1]  # saved without "randomize"
    assert convert(workflow)["3"]["inputs"]["steps"] == 20


def test_legacy_seed_name_gets_its_control_value_skipped() -> None:
    # An old custom sampler declares `seed` without control_after_generate; old frontends still added it.
    spec = NodeSpec(
        id="OldSampler",
        inputs=(
            _input("seed", "INT"),
            _input("steps", "INT"),
            _input("sampler", "COMBO", choices=("euler", "heun")),
        ),
    )
    workflow = _single_node_workflow("OldSampler", [5, "fixed", 30, "heun"])
    prompt = workflow_to_prompt(workflow, {"OldSampler": spec}.get)
    assert prompt["1"]["inputs"] == {"seed": 5, "steps": 30, "sampler": "heun"}


def test_combo_control_and_filter_values_are_skipped() -> None:
    spec = NodeSpec(
        id="RandomStyle",
        inputs=(
            _input("style", "COMBO", choices=("ink", "oil"), control_after_generate=True),
            _input("strength", "FLOAT"),
        ),
    )
    workflow = _single_node_workflow("RandomStyle", ["oil", "randomize", "", 0.5])
    assert workflow_to_prompt(workflow, {"RandomStyle": spec}.get)["1"]["inputs"] == {"style": "oil", "strength": 0.5}


def test_legacy_force_input_widget_values_are_skipped() -> None:
    # Some frontend versions kept a value for forceInput widgets; the count tells which layout it is.
    spec = NodeSpec(
        id="Scale",
        inputs=(_input("factor", "FLOAT", forceInput=True), _input("method", "COMBO", choices=("area", "bicubic"))),
    )
    lookup_scale = {"Scale": spec}.get
    assert workflow_to_prompt(_single_node_workflow("Scale", [2.0, "bicubic"]), lookup_scale)["1"]["inputs"] == {
        "method": "bicubic"
    }
    assert workflow_to_prompt(_single_node_workflow("Scale", ["bicubic"]), lookup_scale)["1"]["inputs"] == {
        "method": "bicubic"
    }


def test_dict_widget_values_map_by_name() -> None:
    spec = NodeSpec(
        id="VideoCombine",
        inputs=(
            _input("images", "IMAGE"),
            _input("frame_rate", "FLOAT"),
            _input("format", "COMBO", choices=("image/gif", "video/h264-mp4")),
            _input("save_output", "BOOLEAN", section="optional"),
        ),
    )
    values = {"format": "video/h264-mp4", "frame_rate": 12, "save_output": True, "videopreview": {"hidden": False}}
    prompt = workflow_to_prompt(_single_node_workflow("VideoCombine", values), {"VideoCombine": spec}.get)
    assert prompt["1"]["inputs"] == {"frame_rate": 12, "format": "video/h264-mp4", "save_output": True}


def test_missing_trailing_widget_values_take_the_defaults() -> None:
    workflow = load("default_txt2img_v04.json")
    # saved before `denoise` existed, and the latent node saved no values at all
    find(workflow["nodes"], 3)["widgets_values"] = [11, "fixed", 25, 7, "heun", "karras"]
    find(workflow["nodes"], 5).pop("widgets_values")
    prompt = convert(workflow)
    assert prompt["3"]["inputs"]["denoise"] == 1.0
    assert prompt["3"]["inputs"]["sampler_name"] == "heun"
    assert prompt["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}


def test_list_widget_values_are_wrapped() -> None:
    spec = NodeSpec(id="PickColors", inputs=(_input("colors", "COMBO", choices=("red", "green", "blue")),))
    prompt = workflow_to_prompt(_single_node_workflow("PickColors", [["red", "blue"]]), {"PickColors": spec}.get)
    assert prompt["1"]["inputs"] == {"colors": {"__value__": ["red", "blue"]}}


def test_hidden_inputs_are_never_emitted() -> None:
    prompt = convert(load("default_txt2img_v04.json"))
    assert "prompt" not in prompt["9"]["inputs"] and "extra_pnginfo" not in prompt["9"]["inputs"]


# --- subgraphs ---


SUBGRAPH_PROMPT = {
    "1": {
        "inputs": {"ckpt_name": "juggernautXL_v9.safetensors"},
        "class_type": "CheckpointLoaderSimple",
        "_meta": {"title": "Load Checkpoint"},
    },
    "10:1": {
        "inputs": {"text": "a lighthouse at dusk, volumetric light", "clip": ["1", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    },
    "10:2": {
        "inputs": {"text": "blurry, low quality", "clip": ["1", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "Negative"},
    },
    "2": {
        "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
        "class_type": "EmptyLatentImage",
        "_meta": {"title": "Empty Latent Image"},
    },
    "3": {
        "inputs": {
            "seed": 20250101,
            "steps": 30,
            "cfg": 6,
            "sampler_name": "dpmpp_2m_sde",
            "scheduler": "karras",
            "denoise": 1,
            "model": ["1", 0],
            "positive": ["10:1", 0],
            "negative": ["10:2", 0],
            "latent_image": ["2", 0],
        },
        "class_type": "KSampler",
        "_meta": {"title": "KSampler"},
    },
    "20:1": {
        "inputs": {"samples": ["3", 0], "vae": ["1", 2]},
        "class_type": "VAEDecode",
        "_meta": {"title": "VAE Decode"},
    },
    "20:2:1": {
        "inputs": {"filename_prefix": "lighthouse/final", "images": ["20:1", 0]},
        "class_type": "SaveImage",
        "_meta": {"title": "Save Image"},
    },
    "4": {
        "inputs": {"images": ["20:1", 0]},
        "class_type": "PreviewImage",
        "_meta": {"title": "Preview Image"},
    },
}


def test_subgraphs_are_flattened_with_path_ids() -> None:
    prompt = convert(load("subgraphs_v1.json"))
    assert prompt == SUBGRAPH_PROMPT
    assert list(prompt) == list(SUBGRAPH_PROMPT)  # inner nodes take the instance's place in the order


def test_nested_definitions_inside_a_definition_are_found() -> None:
    workflow = load("subgraphs_v1.json")
    subgraphs = workflow["definitions"]["subgraphs"]
    innermost = subgraphs.pop()
    subgraphs[1]["definitions"] = {"subgraphs": [innermost]}
    assert convert(workflow) == SUBGRAPH_PROMPT


def test_subgraph_input_fed_from_outside_overrides_the_promoted_widget() -> None:
    workflow = load("subgraphs_v1.json")
    workflow["nodes"].append(
        {
            "id": 30,
            "type": "PrimitiveString",
            "order": 0,
            "mode": 0,
            "outputs": [{"name": "STRING", "type": "STRING", "links": [30]}],
            "widgets_values": ["a lighthouse in a storm"],
        }
    )
    workflow["links"].append(
        {"id": 30, "origin_id": 30, "origin_slot": 0, "target_id": 10, "target_slot": 1, "type": "STRING"}
    )
    find(workflow["nodes"], 10)["inputs"][1]["link"] = 30
    prompt = convert(workflow)
    assert prompt["10:1"]["inputs"]["text"] == ["30", 0]


def test_subgraph_instance_without_promoted_value_keeps_the_inner_widget() -> None:
    workflow = load("subgraphs_v1.json")
    find(workflow["nodes"], 10)["widgets_values"] = []
    assert convert(workflow)["10:1"]["inputs"]["text"] == "placeholder prompt"


def test_proxy_widgets_override_inner_widget_values() -> None:
    workflow = load("subgraphs_v1.json")
    instance = find(workflow["nodes"], 10)
    instance["properties"] = {"proxyWidgets": [["-1", "positive_text"], ["2", "text"]]}
    instance["widgets_values"] = ["a lighthouse at dawn", "oversaturated"]
    prompt = convert(workflow)
    assert prompt["10:1"]["inputs"]["text"] == "a lighthouse at dawn"
    assert prompt["10:2"]["inputs"]["text"] == "oversaturated"


def test_a_subgraph_input_wired_straight_to_an_output_passes_through() -> None:
    workflow = load("subgraphs_v1.json")
    decode = workflow["definitions"]["subgraphs"][1]
    # IMAGE output now comes straight from the `samples` input (a deliberately odd but legal wiring)
    decode["links"] = [link for link in decode["links"] if link["id"] != 4]
    decode["links"].append(
        {"id": 9, "origin_id": -10, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "*"}
    )
    decode["outputs"][0]["linkIds"] = [9]
    assert convert(workflow)["4"]["inputs"]["images"] == ["3", 0]


def test_a_bypassed_subgraph_instance_is_routed_around_and_its_contents_dropped() -> None:
    workflow = load("subgraphs_v1.json")
    find(workflow["nodes"], 20)["mode"] = 4
    prompt = convert(workflow)
    assert not any(node_id.startswith("20:") for node_id in prompt)
    # the instance's IMAGE output has no IMAGE input to stand in for it
    assert prompt["4"]["inputs"] == {}


def test_a_muted_subgraph_instance_drops_everything_inside() -> None:
    workflow = load("subgraphs_v1.json")
    find(workflow["nodes"], 10)["mode"] = 2
    prompt = convert(workflow)
    assert not any(node_id.startswith("10:") for node_id in prompt)
    assert "positive" not in prompt["3"]["inputs"] and "negative" not in prompt["3"]["inputs"]


def test_inner_bypass_inside_a_subgraph_routes_to_the_outer_origin() -> None:
    workflow = load("subgraphs_v1.json")
    decode = workflow["definitions"]["subgraphs"][1]
    find(decode["nodes"], 1)["mode"] = 4  # VAEDecode: IMAGE has no matching input
    save = workflow["definitions"]["subgraphs"][2]
    save["nodes"][0]["inputs"][0]["type"] = "*"  # a wildcard consumer takes input 0 (samples)
    prompt = convert(workflow)
    assert "20:1" not in prompt
    assert prompt["20:2:1"]["inputs"]["images"] == ["3", 0]
    assert prompt["4"]["inputs"] == {}


def test_deeply_nested_subgraphs_flatten_iteratively() -> None:
    depth = 300
    definitions = []
    for level in range(depth):
        inner_type = f"level-{level + 1}" if level + 1 < depth else "SaveImage"
        inner = {"id": 1, "type": inner_type, "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}
        if inner_type == "SaveImage":
            inner["widgets_values"] = ["deep"]
        definitions.append(
            {
                "id": f"level-{level}",
                "name": f"Level {level}",
                "inputs": [{"name": "images", "type": "IMAGE", "linkIds": [1]}],
                "outputs": [],
                "nodes": [inner],
                "links": [
                    {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"}
                ],
            }
        )
    workflow = load("default_txt2img_v1.json")
    find(workflow["nodes"], 9).update(type="level-0", widgets_values=[])
    workflow["definitions"] = {"subgraphs": definitions}
    prompt = convert(workflow)
    deep_id = ":".join(["9"] + ["1"] * depth)
    assert prompt[deep_id]["inputs"] == {"filename_prefix": "deep", "images": ["8", 0]}


def test_a_subgraph_that_contains_itself_is_an_error() -> None:
    workflow = load("subgraphs_v1.json")
    innermost = workflow["definitions"]["subgraphs"][2]
    innermost["nodes"].append({"id": 2, "type": innermost["id"], "mode": 0, "inputs": []})
    with pytest.raises(
        WorkflowError, match=r"node 20:2:2: subgraph 'Save with prefix' .* contains an instance of itself"
    ):
        convert(workflow)


# --- errors ---


def test_unknown_node_types_are_all_reported_at_once() -> None:
    workflow = load("subgraphs_v1.json")
    find(workflow["nodes"], 2)["type"] = "LatentNoiseInjector"
    workflow["definitions"]["subgraphs"][2]["nodes"][0]["type"] = "SaveImageWebsocket"
    with pytest.raises(WorkflowError) as caught:
        convert(workflow)
    message = str(caught.value)
    assert "not installed" in message
    assert "'LatentNoiseInjector' (node 2)" in message
    assert "'SaveImageWebsocket' (node 20:2:1)" in message
    assert isinstance(caught.value, GraphError)


def test_muted_nodes_of_unknown_type_are_not_reported() -> None:
    workflow = load("bypass_mute_v04.json")
    find(workflow["nodes"], 10)["type"] = "SomeMissingUpscaler"
    assert "10" not in convert(workflow)


def test_unknown_frontend_only_nodes_are_reported_unless_declared() -> None:
    workflow = load("reroutes_v04.json")
    for node_id in (10, 11):
        find(workflow["nodes"], node_id)["type"] = "Reroute (rgthree)"
    with pytest.raises(WorkflowError, match=r"'Reroute \(rgthree\)' \(node 10, 11\)"):
        convert(workflow)
    prompt = convert(workflow, passthrough_types={"Reroute (rgthree)"})
    assert prompt["5"]["inputs"]["model"] == ["1", 0]


def test_legacy_group_nodes_get_a_specific_message() -> None:
    workflow = load("default_txt2img_v04.json")
    find(workflow["nodes"], 6)["type"] = "workflow>Prompt"
    workflow["extra"]["groupNodes"] = {"Prompt": {"nodes": [], "links": []}}
    with pytest.raises(WorkflowError, match=r"'workflow>Prompt' \(node 6\) is a legacy group node"):
        convert(workflow)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda w: w.update(nodes={"3": {}}), "no 'nodes' list"),
        (lambda w: w["nodes"].append("KSampler"), r"node #7 must be an object"),
        (lambda w: find(w["nodes"], 3).pop("type"), r"node 3 has no 'type'"),
        (lambda w: find(w["nodes"], 3).update(id=None), r"node #3 has no usable 'id'"),
        (lambda w: find(w["nodes"], 8).update(id=9), r"node 9: the id is used by more than one node"),
        (lambda w: find(w["nodes"], 3).update(inputs={"model": 1}), r"node 3 \(KSampler\): 'inputs' must be a list"),
        (lambda w: find(w["nodes"], 5).update(widgets_values="512"), r"node 5 \(EmptyLatentImage\): 'widgets_values'"),
        (lambda w: find(w["nodes"], 5).update(mode="always"), r"node 5 \(EmptyLatentImage\): 'mode' must be"),
        (lambda w: w["links"].append([10, 4]), r"link #9 is malformed"),
        (lambda w: w.update(links="1,2,3"), r"'links' must be a list"),
        (lambda w: w.update(definitions={"subgraphs": {"id": "x"}}), r"'definitions.subgraphs' must be a list"),
        (lambda w: w.update(definitions={"subgraphs": [{"name": "Nameless", "nodes": []}]}), r"'Nameless' has no 'id'"),
    ],
)
def test_malformed_workflows_say_what_and_where(mutate: Any, expected: str) -> None:
    workflow = load("default_txt2img_v04.json")
    mutate(workflow)
    with pytest.raises(WorkflowError, match=expected):
        convert(workflow)


def test_every_structural_problem_is_reported_together() -> None:
    workflow = load("default_txt2img_v04.json")
    find(workflow["nodes"], 3).pop("type")
    find(workflow["nodes"], 5).update(widgets_values="512")
    with pytest.raises(WorkflowError) as caught:
        convert(workflow)
    assert "node 3 has no 'type'" in str(caught.value) and "node 5 (EmptyLatentImage)" in str(caught.value)


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(WorkflowError, match="must be a JSON object"):
        workflow_to_prompt([], lookup)  # type: ignore[arg-type]


def test_dangling_links_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    workflow = load("default_txt2img_v04.json")
    find(workflow["nodes"], 8)["inputs"][1]["link"] = 99  # no such link
    # link 9 now comes from node 42, which does not exist
    workflow["links"] = [link if link[0] != 9 else [9, 42, 0, 9, 0, "IMAGE"] for link in workflow["links"]]
    with caplog.at_level(logging.DEBUG, logger="execution.workflow_graph"):
        prompt = convert(workflow)
    assert prompt["8"]["inputs"] == {"samples": ["3", 0]}
    assert prompt["9"]["inputs"] == {"filename_prefix": "ComfyUI"}
    assert "link 99" in caplog.text and "node 42" in caplog.text


# --- helpers ---


def _input(name: str, type_name: str, section: str = "required", choices: Any = None, **options: Any) -> InputSpec:
    return InputSpec(name=name, type=type_name, section=section, options=options, choices=choices)  # type: ignore[arg-type]


def _single_node_workflow(node_type: str, widgets_values: Any) -> dict[str, Any]:
    return {
        "last_node_id": 1,
        "last_link_id": 0,
        "nodes": [{"id": 1, "type": node_type, "order": 0, "mode": 0, "inputs": [], "widgets_values": widgets_values}],
        "links": [],
        "version": 0.4,
    }
