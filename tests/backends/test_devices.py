"""The offload plan on described machines: Apple unified memory, CUDA cards, none."""

from __future__ import annotations

from dataclasses import replace

import pytest

from emberd.backends.base import LoadOptions, ModelLoadError
from emberd.backends.devices import (
    ATTENTION_BYTES_PER_TOKEN_PAIR,
    GPU_RESERVE_BYTES,
    Compute,
    Device,
    ModelSize,
    SplitMode,
    cpu_plan,
    describe_compute,
    fewer_layers,
    plan_load,
    safe_batch_size,
)

GB = 10**9
GIB = 1 << 30

APPLE = Compute(
    gpus=(Device("Metal", "Metal", "Apple M3 Pro", 27 * GIB, 27 * GIB, unified=True),),
    gpu_backends=("Metal",),
)
ONE_CARD = Compute(
    gpus=(Device("CUDA0", "CUDA", "NVIDIA GeForce RTX 4090", 23 * GIB, 24 * GIB),),
    gpu_backends=("CUDA",),
)
TWO_CARDS = Compute(
    gpus=(
        Device("CUDA0", "CUDA", "NVIDIA RTX A4000", 15 * GIB, 16 * GIB),
        Device("CUDA1", "CUDA", "NVIDIA RTX A4000", 15 * GIB, 16 * GIB),
    ),
    gpu_backends=("CUDA",),
)
SMALL_CARD = Compute(
    gpus=(Device("CUDA0", "CUDA", "NVIDIA GeForce GT 1030", 1 * GIB, 2 * GIB),),
    gpu_backends=("CUDA",),
)
NO_GPU = Compute()

# nomic-embed-text F16 (274 MB, 12 blocks) and a large embedding model in F32 (30 GB).
NOMIC = ModelSize(file_size=274_000_000, n_layers=12, layer_bytes=240_000_000)
LARGE = ModelSize(file_size=30 * GB, n_layers=36, layer_bytes=28 * GB)
CTX = 2048


def options(**changes: int) -> LoadOptions:
    base = LoadOptions(
        num_ctx=CTX,
        num_batch=CTX,
        num_gpu=-1,
        main_gpu=0,
        use_mmap=False,
        use_mlock=False,
        num_thread=8,
    )
    return replace(base, **changes)


def test_num_gpu_0_is_the_cpu_alone_on_every_machine() -> None:
    for compute in (APPLE, ONE_CARD, TWO_CARDS, SMALL_CARD, NO_GPU):
        plan = plan_load(compute, NOMIC, options(num_gpu=0), CTX)
        assert plan.gpus == ()
        assert plan.gpu_layers == 0
        assert plan.op_offload is False
        assert plan.decode_budget is None  # the server's CPU budget
        assert plan.on_cpu


def test_no_gpu_runs_on_the_cpu_without_op_offload() -> None:
    plan = plan_load(NO_GPU, NOMIC, options(), CTX)
    assert (plan.gpus, plan.gpu_layers, plan.op_offload) == ((), 0, False)
    assert plan.context_tokens == CTX


def test_apple_unified_memory_takes_the_whole_model() -> None:
    plan = plan_load(APPLE, NOMIC, options(), CTX)
    assert [gpu.name for gpu in plan.gpus] == ["Metal"]
    assert plan.split_mode == SplitMode.NONE
    assert plan.gpu_layers == 12
    assert plan.op_offload is True


def test_one_card_takes_a_model_that_fits_whole() -> None:
    plan = plan_load(ONE_CARD, NOMIC, options(), CTX)
    assert (plan.split_mode, plan.main_gpu, plan.gpu_layers) == (SplitMode.NONE, 0, 12)


def test_two_cards_put_a_small_model_on_the_main_gpu_alone() -> None:
    for main in (0, 1):
        plan = plan_load(TWO_CARDS, NOMIC, options(main_gpu=main), CTX)
        assert [gpu.name for gpu in plan.gpus] == [f"CUDA{main}"]
        assert (plan.split_mode, plan.main_gpu) == (SplitMode.NONE, 0)


def test_two_cards_split_by_layer_only_a_model_too_large_for_one() -> None:
    model = ModelSize(file_size=20 * GB, n_layers=40, layer_bytes=20 * GB)
    plan = plan_load(TWO_CARDS, model, options(main_gpu=1), CTX)
    assert plan.split_mode == SplitMode.LAYER
    assert [gpu.name for gpu in plan.gpus] == ["CUDA1", "CUDA0"]
    assert plan.gpus[plan.main_gpu].name == "CUDA1"
    assert plan.gpu_layers == 40


def test_main_gpu_is_bounded_by_the_real_gpus() -> None:
    with pytest.raises(ModelLoadError, match=r"main_gpu 1 .* 1 GPU"):
        plan_load(ONE_CARD, NOMIC, options(main_gpu=1), CTX)
    # On the CPU alone main_gpu names nothing, so it cannot be wrong.
    assert plan_load(NO_GPU, NOMIC, options(main_gpu=3), CTX).on_cpu


def test_a_card_too_small_takes_the_layers_that_fit() -> None:
    plan = plan_load(ONE_CARD, LARGE, options(), CTX)
    per_layer = LARGE.per_layer
    assert 0 < plan.gpu_layers < LARGE.n_layers
    assert plan.gpu_layers * per_layer <= ONE_CARD.gpus[0].free
    reserve = GPU_RESERVE_BYTES + ATTENTION_BYTES_PER_TOKEN_PAIR * CTX * CTX
    assert plan.gpu_layers * per_layer + reserve <= ONE_CARD.gpus[0].free
    assert (plan.gpu_layers + 1) * per_layer + reserve > ONE_CARD.gpus[0].free


def test_a_card_with_no_room_leaves_the_model_on_the_cpu() -> None:
    plan = plan_load(SMALL_CARD, LARGE, options(), CTX)
    assert plan.on_cpu
    assert plan.op_offload is False
    assert "free memory" in plan.why


def test_num_gpu_asked_for_by_number_is_tried_as_asked() -> None:
    plan = plan_load(SMALL_CARD, LARGE, options(num_gpu=10), CTX)
    assert plan.gpu_layers == 10
    assert plan_load(ONE_CARD, NOMIC, options(num_gpu=100), CTX).gpu_layers == 12


def test_an_allocation_failure_halves_the_layers_down_to_the_cpu() -> None:
    opts = options()
    plan = plan_load(ONE_CARD, NOMIC, opts, CTX)
    seen = [plan.gpu_layers]
    while (retry := fewer_layers(plan, ONE_CARD, NOMIC, opts, CTX)) is not None:
        plan = retry
        seen.append(plan.gpu_layers)
    assert seen == [12, 6, 3, 1, 0]
    assert plan.on_cpu and plan.op_offload is False


def test_the_gpu_decode_budget_follows_num_batch_in_safe_sizes() -> None:
    gpu = plan_load(ONE_CARD, NOMIC, options(num_batch=CTX), CTX)
    assert gpu.decode_budget == CTX
    assert gpu.context_tokens == CTX
    small = plan_load(ONE_CARD, NOMIC, options(num_batch=300), CTX)
    assert small.decode_budget == 512  # 300 is no safe size; 512 is
    assert small.context_tokens == CTX  # still the longest sequence
    short = plan_load(ONE_CARD, NOMIC, options(num_ctx=512, num_batch=512), 512)
    assert (short.context_tokens, short.decode_budget) == (512, 512)
    for plan in (gpu, small, short):
        assert plan.context_tokens == safe_batch_size(plan.context_tokens)


def test_the_cpu_plan_sizes_contexts_to_the_longest_sequence() -> None:
    plan = cpu_plan(options(num_ctx=4096), 512)
    assert plan.context_tokens == 512
    assert plan.decode_budget is None


def test_the_start_up_line_names_what_computes() -> None:
    assert describe_compute(NO_GPU) == "compute: CPU (this build has no GPU backend)"
    assert describe_compute(Compute(gpu_backends=("CUDA",))) == (
        "compute: CPU (this build has CUDA but found no GPU)"
    )
    apple = Compute(gpus=(Device("Metal", "Metal", "Apple M3 Pro", 0, 36 * GB, unified=True),))
    assert describe_compute(apple) == "compute: Metal, Apple M3 Pro, 36 GB unified"
    h200 = Compute(gpus=(Device("CUDA0", "CUDA", "NVIDIA H200", 0, 141 * GB),))
    assert describe_compute(h200) == "compute: CUDA0 NVIDIA H200, 141 GB"


def test_a_description_travels_as_plain_data() -> None:
    for compute in (APPLE, TWO_CARDS, NO_GPU):
        assert Compute.from_dict(compute.as_dict()) == compute
