"""Sampling: samplers, schedules, model sampling, noise, CFG, KSampler orchestration.

`SAMPLERS` and `SCHEDULERS` are the registries nodes read for their dropdowns and validation;
their name order is ComfyUI's combo order (KSampler.SAMPLERS / KSampler.SCHEDULERS, spec §6.1), so
/object_info lists them identically. Every name runs its own algorithm; none falls back to another.
Adding a sampler = one function in a samplers_*.py file + one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from core.errors import EngineError
from diffusion.sampling import samplers as _s
from diffusion.sampling import samplers_dpm as _dpm
from diffusion.sampling import samplers_multistep as _ms
from diffusion.sampling import samplers_sde_extra as _sde
from diffusion.sampling import samplers_unipc as _unipc
from diffusion.sampling import schedules as _sch

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """An ordered, read-only name -> implementation table."""

    def __init__(self, kind: str, entries: Sequence[tuple[str, T]]) -> None:
        self.kind = kind
        self._items = dict(entries)
        if len(self._items) != len(entries):
            raise ValueError(f"duplicate {kind} names in registry")

    @property
    def names(self) -> list[str]:
        return list(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def resolve(self, name: str) -> T:
        """Like [] but raises an EngineError that lists the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise EngineError(f"unknown {self.kind} '{name}'; expected one of: {', '.join(self._items)}") from None


SamplerFn = Callable[..., object]
SchedulerFn = Callable[..., object]

SAMPLERS: Registry[SamplerFn] = Registry(
    "sampler",
    [
        ("euler", _s.sample_euler),
        ("euler_cfg_pp", _ms.sample_euler_cfg_pp),
        ("euler_ancestral", _s.sample_euler_ancestral),
        ("euler_ancestral_cfg_pp", _ms.sample_euler_ancestral_cfg_pp),
        ("heun", _s.sample_heun),
        ("heunpp2", _s.sample_heunpp2),
        ("exp_heun_2_x0", _sde.sample_exp_heun_2_x0),
        ("exp_heun_2_x0_sde", _sde.sample_exp_heun_2_x0_sde),
        ("dpm_2", _s.sample_dpm_2),
        ("dpm_2_ancestral", _s.sample_dpm_2_ancestral),
        ("lms", _s.sample_lms),
        ("dpm_fast", _dpm.sample_dpm_fast),
        ("dpm_adaptive", _dpm.sample_dpm_adaptive),
        ("dpmpp_2s_ancestral", _dpm.sample_dpmpp_2s_ancestral),
        ("dpmpp_2s_ancestral_cfg_pp", _ms.sample_dpmpp_2s_ancestral_cfg_pp),
        ("dpmpp_sde", _dpm.sample_dpmpp_sde),
        ("dpmpp_sde_gpu", _dpm.sample_dpmpp_sde_gpu),
        ("dpmpp_2m", _dpm.sample_dpmpp_2m),
        ("dpmpp_2m_cfg_pp", _ms.sample_dpmpp_2m_cfg_pp),
        ("dpmpp_2m_sde", _dpm.sample_dpmpp_2m_sde),
        ("dpmpp_2m_sde_gpu", _dpm.sample_dpmpp_2m_sde_gpu),
        ("dpmpp_2m_sde_heun", _dpm.sample_dpmpp_2m_sde_heun),
        ("dpmpp_2m_sde_heun_gpu", _dpm.sample_dpmpp_2m_sde_heun_gpu),
        ("dpmpp_3m_sde", _dpm.sample_dpmpp_3m_sde),
        ("dpmpp_3m_sde_gpu", _dpm.sample_dpmpp_3m_sde_gpu),
        ("ddpm", _s.sample_ddpm),
        ("lcm", _s.sample_lcm),
        ("ipndm", _ms.sample_ipndm),
        ("ipndm_v", _ms.sample_ipndm_v),
        ("deis", _ms.sample_deis),
        ("res_multistep", _ms.sample_res_multistep),
        ("res_multistep_cfg_pp", _ms.sample_res_multistep_cfg_pp),
        ("res_multistep_ancestral", _ms.sample_res_multistep_ancestral),
        ("res_multistep_ancestral_cfg_pp", _ms.sample_res_multistep_ancestral_cfg_pp),
        ("gradient_estimation", _ms.sample_gradient_estimation),
        ("gradient_estimation_cfg_pp", _ms.sample_gradient_estimation_cfg_pp),
        ("er_sde", _sde.sample_er_sde),
        ("seeds_2", _sde.sample_seeds_2),
        ("seeds_3", _sde.sample_seeds_3),
        ("sa_solver", _sde.sample_sa_solver),
        ("sa_solver_pece", _sde.sample_sa_solver_pece),
        ("ddim", _s.sample_ddim),
        ("uni_pc", _unipc.sample_uni_pc),
        ("uni_pc_bh2", _unipc.sample_uni_pc_bh2),
    ],
)

SCHEDULERS: Registry[SchedulerFn] = Registry(
    "scheduler",
    [
        ("simple", _sch.simple_scheduler),
        ("sgm_uniform", _sch.sgm_uniform_scheduler),
        ("karras", _sch.karras_scheduler),
        ("exponential", _sch.exponential_scheduler),
        ("ddim_uniform", _sch.ddim_uniform_scheduler),
        ("beta", _sch.beta_scheduler),
        ("normal", _sch.normal_scheduler),
        ("linear_quadratic", _sch.linear_quadratic_scheduler),
        ("kl_optimal", _sch.kl_optimal_scheduler),
    ],
)

__all__ = ["SAMPLERS", "SCHEDULERS", "Registry"]
