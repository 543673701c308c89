"""The multi-GPU evaluator pool on CPU with made-up devices: every worker is used, no device ever
runs two evaluations at once (within a pool, and across two pools = two jobs on one node)."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avo.evaluate.pool import DevicePool, device_file_lock, visible_devices

DEVICES = ["0", "1", "2", "3"]


class Recorder:
    """A fake evaluator that records (device, start, end) of each call."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.calls: list[tuple[str, float, float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, kernel, suite=None, *, env, **kwargs):
        start = time.monotonic()
        time.sleep(self.seconds)
        end = time.monotonic()
        with self._lock:
            self.calls.append((env["CUDA_VISIBLE_DEVICES"], start, end, kernel))
        return {"kernel": kernel, "suite": suite, "device": env["CUDA_VISIBLE_DEVICES"], **kwargs}


def _assert_no_overlap(calls):
    by_device: dict[str, list[tuple[float, float]]] = {}
    for device, start, end, *_ in calls:
        by_device.setdefault(device, []).append((start, end))
    for device, spans in by_device.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two evaluations overlapped on device {device}"


def test_every_worker_used_and_no_device_shared(tmp_path):
    fake = Recorder()
    with DevicePool(DEVICES, evaluate=fake, lock_dir=tmp_path, keys=[f"k{d}" for d in DEVICES]) as pool:
        futures = [pool.submit(f"cand{i}.py", "smoke", stages=("compile",)) for i in range(16)]
        results = [f.result(timeout=30) for f in futures]
    assert [r["kernel"] for r in results] == [f"cand{i}.py" for i in range(16)]
    assert all(r["suite"] == "smoke" and r["stages"] == ("compile",) for r in results)
    assert {c[0] for c in fake.calls} == set(DEVICES)  # every worker used
    assert len(fake.calls) == 16
    _assert_no_overlap(fake.calls)


class Gathering(Recorder):
    """Each of the first len(DEVICES) calls waits until that many calls are in flight at once: a
    pool that ran fewer side by side breaks the barrier (no clock involved)."""

    def __init__(self):
        super().__init__(seconds=0.0)
        self.barrier = threading.Barrier(len(DEVICES), timeout=60)
        self.started = 0
        self.gathered: list[str] = []

    def __call__(self, kernel, suite=None, *, env, **kwargs):
        with self._lock:
            self.started += 1
            first = self.started <= len(DEVICES)
            if first:
                self.gathered.append(env["CUDA_VISIBLE_DEVICES"])
        if first:
            self.barrier.wait()
        return super().__call__(kernel, suite, env=env, **kwargs)


def test_the_devices_run_side_by_side(tmp_path):
    fake = Gathering()
    with DevicePool(DEVICES, evaluate=fake, lock_dir=tmp_path, keys=[f"k{d}" for d in DEVICES]) as pool:
        futures = [pool.submit(f"cand{i}.py", "smoke") for i in range(8)]
        for f in futures:
            f.result(timeout=120)
    assert not fake.barrier.broken and len(fake.calls) == 8
    assert sorted(fake.gathered) == sorted(DEVICES)  # the calls in flight at once, one per device


def test_two_pools_on_one_node_never_share_a_gpu(tmp_path):
    """Two jobs on one node seeing the same two GPUs: the file locks keep them apart."""
    fake = Recorder(seconds=0.03)
    keys = ["GPU-a", "GPU-b"]
    a = DevicePool(["0", "1"], evaluate=fake, lock_dir=tmp_path, keys=keys)
    b = DevicePool(["0", "1"], evaluate=fake, lock_dir=tmp_path, keys=keys)
    futures = [p.submit(f"{name}{i}.py") for i in range(8) for p, name in ((a, "a"), (b, "b"))]
    for f in futures:
        f.result(timeout=30)
    a.close()
    b.close()
    assert {c[3][0] for c in fake.calls} == {"a", "b"}
    _assert_no_overlap(fake.calls)  # devices "0"/"1" are the same GPUs for both pools


def _hold_lock(lock_dir, key, seconds):
    """Another process holding a GPU's lock file for `seconds`; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from pathlib import Path; from avo.evaluate.pool import device_file_lock\n"
         f"with device_file_lock(Path({str(lock_dir)!r}), {key!r}):\n"
         f"    print('held', flush=True); time.sleep({seconds})\n"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_gpu_held_by_another_process_is_waited_for(tmp_path):
    holder = _hold_lock(tmp_path, "GPU-x", 1.0)
    fake = Recorder(seconds=0.0)
    t0 = time.monotonic()
    with DevicePool(["0"], evaluate=fake, lock_dir=tmp_path, keys=["GPU-x"]) as pool:
        pool.evaluate("k.py")
    waited = time.monotonic() - t0
    holder.wait(timeout=10)
    assert waited > 0.5, "the evaluation ran while another process held the GPU"


def test_errors_reach_the_caller_and_the_worker_survives(tmp_path):
    def flaky(kernel, *, env):
        if kernel == "bad.py":
            raise RuntimeError("boom")
        return env["CUDA_VISIBLE_DEVICES"]

    with DevicePool(["7"], evaluate=flaky, lock_dir=None) as pool:
        with pytest.raises(RuntimeError, match="boom"):
            pool.evaluate("bad.py")
        assert pool.evaluate("good.py") == "7"


def test_lock_is_released_when_its_holder_dies(tmp_path):
    holder = _hold_lock(tmp_path, "GPU-y", 60)
    holder.kill()
    holder.wait()
    done = threading.Event()

    def take():
        with device_file_lock(tmp_path, "GPU-y"):
            done.set()

    threading.Thread(target=take, daemon=True).start()
    assert done.wait(5), "a killed job left its GPU locked"


def test_pool_needs_a_pinnable_evaluator_and_devices():
    with pytest.raises(TypeError, match="env"):
        DevicePool(["0"], evaluate=lambda kernel: None, lock_dir=None)
    with pytest.raises(ValueError, match="no GPU"):
        DevicePool([], evaluate=Recorder(), lock_dir=None)
    with pytest.raises(ValueError, match="twice"):
        DevicePool(["0", "0"], evaluate=Recorder(), lock_dir=None)


def test_visible_devices_follows_cuda_visible_devices():
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == ["0", "1", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-def"}) == ["GPU-abc", "GPU-def"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,-1,3"}) == ["2"]


def test_the_real_evaluator_accepts_the_pinned_environment(tmp_path):
    """The pool drives avo.evaluate.api.evaluate (a CPU evaluation here): `env` reaches the kernel's
    process (a sandboxed worker whose /tmp is its own: the kernel says what it saw in an error)."""
    from avo import suites
    from avo.config import EvaluatorConfig

    root = Path(__file__).resolve().parents[1]
    kernel = tmp_path / "k.py"
    kernel.write_text((root / "kernels" / "reference" / "sdpa.py").read_text() + "\nimport os as _os\n"
                      "raise RuntimeError('pinned to ' + _os.environ['CUDA_VISIBLE_DEVICES'] + '.')\n")
    shapes = suites.load("smoke")[:1]
    settings = EvaluatorConfig(warmup_ms=5, repeats=3, rotate_inputs=1, reverify=False)
    with DevicePool(["fake0", "fake1"], lock_dir=tmp_path / "locks", keys=["a", "b"]) as pool:
        result = pool.evaluate(kernel, shapes, device="cpu", settings=settings, stages=("compile", "correctness"))
    assert result.status == "import_error", result.message
    assert "pinned to fake0." in result.message or "pinned to fake1." in result.message, result.message


@pytest.mark.gpu
def test_pool_on_real_gpus_pins_each_evaluation(tmp_path):
    """On the device machine: every visible GPU takes evaluations, each evaluation process sees
    exactly the one GPU it was given, and no GPU runs two at once."""
    import json

    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from avo.config import EvaluatorConfig
    from avo.evaluate.pool import device_keys, visible_devices
    from avo.suites import Shape

    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "seen.jsonl"
    kernel = tmp_path / "k.py"
    # At import the kernel notes what the evaluation process was given and which GPU it got.
    kernel.write_text((root / "kernels" / "reference" / "sdpa.py").read_text() + "\nimport json as _j, os as _o, time as _t\n"
                      "import torch as _torch\n"
                      f"open({str(log)!r}, 'a').write(_j.dumps({{'cvd': _o.environ['CUDA_VISIBLE_DEVICES'], "
                      "'count': _torch.cuda.device_count(), 'uuid': str(_torch.cuda.get_device_properties(0).uuid), "
                      "'t': _t.time()}) + '\\n')\n")
    devices = visible_devices()
    keys = device_keys(devices)
    assert len(set(keys)) == len(devices)
    settings = EvaluatorConfig(warmup_ms=200, repeats=10, rotate_inputs=2, reverify=False)
    shapes = [Shape(4, 2048, 16, 16, 128, False)]
    with DevicePool(devices, lock_dir=tmp_path / "locks") as pool:
        futures = [pool.submit(kernel, shapes, device="cuda", settings=settings) for _ in range(2 * len(devices))]
        results = [f.result(timeout=600) for f in futures]
    assert all(r.status == "ok" for r in results), [r.message for r in results]
    seen = [json.loads(x) for x in log.read_text().splitlines()]
    assert {s["cvd"] for s in seen} == set(devices)  # every GPU used
    assert all(s["count"] == 1 for s in seen)  # each process saw one GPU only
    uuid_of = {}
    for s in seen:
        assert uuid_of.setdefault(s["cvd"], s["uuid"]) == s["uuid"]
    assert len(set(uuid_of.values())) == len(devices)  # distinct physical GPUs
    print(f"{len(devices)} GPU(s): {keys}; evaluations per GPU:",
          {d: sum(s["cvd"] == d for s in seen) for d in devices})
