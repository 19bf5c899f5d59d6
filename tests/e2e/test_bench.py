"""`nimbus bench --quick`: the command runs end to end (its own server,
every runtime the node has) and writes the JSON shape results are compared in."""

import json
import os
import subprocess

from conftest import BIN


def test_bench_quick_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    args = [BIN, "bench", "--quick", "--json", str(out)]
    if os.environ.get("RUST_HELLO_BIN"):
        args += ["--rust-hello", os.environ["RUST_HELLO_BIN"]]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "floors", "runtimes", "function_urls", "s3", "queues", "schedules",
                           "tasks", "idle_cpu_percent"}
    assert report["machine"]["cpus"] >= 1 and report["machine"]["memory_mb"] > 0
    floors = report["floors"]
    assert floors["loopback_rtt_us"]["p50"] > 0
    assert set(report["runtimes"]) >= {"provided.al2023"} and any(k.startswith("python3.") for k in report["runtimes"])
    for runtime, figures in report["runtimes"].items():
        assert floors[f"{runtime}_spawn_ms"]["p50"] > 0
        for key in ("cold_ms", "cold_back_to_back_ms", "warm_ms", "warm_overhead_us", "warm_128mb_ms"):
            assert 0 < figures[key]["p50"] <= figures[key]["p99"], (runtime, key, figures[key])
        assert set(figures["throughput_rps"]) == {"c1", "c16", "c64"}
        assert all(v > 0 for v in figures["throughput_rps"].values())
        assert {"100", "500", "1000"} <= set(figures["scale_out_s"])
        # Read from the processes' CPU clocks (ns), so --quick's 50 invokes show.
        assert figures["cpu_per_invoke_us"] > 0, (runtime, figures["cpu_per_invoke_us"])
        # The node's own share: the rest is the environment's runtime.
        assert 0 < figures["node_cpu_per_invoke_us"] < figures["cpu_per_invoke_us"], (runtime, figures)
        assert figures["idle_env_mb"] > 0 and figures["max_idle_envs"] > 0
    urls = report["function_urls"]
    assert urls["runtime"] == "provided.al2023"
    for key in ("invoke_warm_ms", "url_warm_ms"):
        assert 0 < urls[key]["p50"] <= urls[key]["p99"], (key, urls[key])
    assert urls["url_rps_c16"] > 0 and urls["invoke_rps_c16"] > 0
    s3 = report["s3"]
    assert s3["large_mib"] == 64, "--quick moves 64 MiB"
    for key in ("get_4k_rps_c32", "put_4k_rps_c32", "disk_write_mbps", "disk_read_mbps", "large_put_mbps",
                "large_get_mbps", "large_put_share", "large_get_share", "md5_mbps",
                "large_put_share_of_md5"):
        assert s3[key] > 0, (key, s3)
    # (A handler that starts before the PUT's answer arrives waited 0 ms.)
    assert 0 <= s3["put_to_handler_ms"]["p50"] <= s3["put_to_handler_ms"]["p99"], s3
    queues = report["queues"]
    assert queues["messages"] > 0, queues
    assert all(queues[k] > 0 for k in ("send_batch_msgs_per_s", "receive_msgs_per_s", "delete_batch_msgs_per_s"))
    mapped = queues["sent_to_handler_ms"]
    assert 0 < mapped["p50"] <= mapped["p99"], mapped
    scheduled = report["schedules"]["due_to_handler_ms"]
    assert scheduled["n"] == 5 and 0 < scheduled["p50"] <= scheduled["p99"], scheduled
    images = report["images"]
    for key in ("push_mbps", "disk_write_floor_mbps", "push_to_floor", "unpack_mbps"):
        assert images[key] > 0, (key, images)
    assert images["push_mb"] > 8 and images["unpack_rootfs_mb"] > 8, "--quick pushes an 8 MiB layer"
    for key in ("spaced_ms", "back_to_back_ms"):
        cold = images["static_cold"][key]
        assert cold["n"] == 3 and 0 < cold["p50"] <= cold["p99"], (key, cold)
        floor = images["static_floor"][key]
        assert floor["n"] == 3 and 0 < floor["p50"] <= floor["p99"], (key, floor)
    assert set(images["static_cold_to_floor"]) == {"spaced", "back_to_back"}
    assert all(v > 0 for v in images["static_cold_to_floor"].values())
    assert "4 KiB GET / PUT" in r.stdout
    tasks = report["tasks"]
    assert 0 < tasks["run_to_answering_ms"]["p50"] <= tasks["run_to_answering_ms"]["p99"], tasks
    assert tasks["burst_tasks"] == 10 and tasks["burst_all_running_s"] > 0, "--quick starts 10 tasks at once"
    idle_task = tasks["idle_task"]
    assert idle_task["tasks_seen"] == 10 and idle_task["cgroup_kb"] > idle_task["app_pss_kb"] > 0, idle_task
    assert tasks["server_idle_cpu_percent"] >= 0
    assert report["idle_cpu_percent"] >= 0
    assert "cold ms" in r.stdout and "idle CPU" in r.stdout, "the table is printed too"


def test_bench_without_the_rust_binary_skips_what_needs_it_and_says_so(tmp_path):
    out = tmp_path / "bench.json"
    missing = tmp_path / "no-such-rust-hello"
    r = subprocess.run([BIN, "bench", "--quick", "--only", "images", "--rust-hello", str(missing), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"skipping container images: no lambda_runtime binary at {missing}" in r.stderr
    assert json.loads(out.read_text())["images"] is None
