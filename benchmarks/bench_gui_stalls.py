"""Longest GUI event-loop stall per user action in a real napari window (run on demand, not a test).

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_gui_stalls.py
    python benchmarks/bench_gui_stalls.py --size 1280 800 --out benchmarks/results/gui_stalls_cpu

A new user's session at 1280x800: the docks added as the Plugins menu adds them, every action a
pressed button or menu entry: open the MOLLI sample (the first time, with the imports; then a
second sample), register it (Run), the Review QC, each overlay button, the T1 fit, the export
and the landmarks (New, Export CSV, Import CSV). A 5 ms ``QTimer`` runs throughout; the
longest gap between two of its ticks while an action runs (from the press until 1 s after its
result is on screen) is the stall a user feels as a frozen window. Writes ``<out>.json`` and ``<out>.md``.
The issue's target: no action above 250 ms after the first import.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-any2reg"
TARGET_MS = 250.0
#: seconds each action is still measured after its result is on screen (deferred work counts)
LINGER_S = 1.0


class StallMeter:
    """Longest gap between the ticks of a 5 ms timer (the event loop's longest absence)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.last = time.perf_counter()
        self.longest = 0.0
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.longest = 0.0

    def close(self) -> float:
        self._tick()
        return self.longest


class StallProfiler:
    """Where the GUI thread is while the event loop is stalled: a thread samples the main
    thread's Python stack every 10 ms while the meter has not ticked for 50 ms, and counts, per
    action, the innermost frame of this plugin and the innermost frame of all (10 ms each)."""

    def __init__(self, meter: StallMeter) -> None:
        import threading

        self.meter, self.main = meter, threading.get_ident()
        self.counts: dict[str, dict[str, int]] = {}
        self.action = ""
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import traceback

        while self.running:
            time.sleep(0.01)
            if time.perf_counter() - self.meter.last < 0.05 or not self.action:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "napari_any2reg" in f.filename]
            counts = self.counts.setdefault(self.action, {})
            for key in ((f"plugin {_where(ours[-1])}" if ours else "plugin: none"), f"innermost {_where(stack[-1])}"):
                counts[key] = counts.get(key, 0) + 1

    def top(self, action: str, n: int = 4) -> list[str]:
        counts = self.counts.get(action, {})
        return [f"{key} ({10 * value} ms)" for key, value in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

    def close(self) -> None:
        self.running = False
        self.thread.join()


def _where(frame) -> str:
    path = frame.filename.replace(os.sep, "/")
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{frame.lineno} {frame.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    parser.add_argument("--engine", default="groupwise", help="registration engine (default: groupwise)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one action")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gui_stalls_cpu")
    parser.add_argument("--profile-stalls", action="store_true",
                        help="also sample where the GUI thread is during stalls (written to <out>_profile.md)")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # internal: the napari-alone window
    args = parser.parse_args(argv)
    if args.replay is not None:
        return _replay(args.replay, args.size)

    start = time.perf_counter()
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_any2reg.widgets._dock import text_overlay

    viewer = napari.Viewer(title="napari-any2reg GUI stalls", show=True)
    viewer.window.resize(*args.size)
    app = QApplication.instance()
    meter = StallMeter()
    profiler = StallProfiler(meter) if args.profile_stalls else None
    rows: list[dict] = []

    def settle(n: int = 10) -> None:
        for _ in range(n):
            app.processEvents()
            time.sleep(0.005)

    def wait(condition) -> bool:
        begin = time.perf_counter()
        while not condition():
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - begin > args.timeout:
                return False
        return True

    added: dict[str, list] = {}  # per action, the layers it added (as napari data tuples) and the label

    def action(name: str, press, done=lambda: True, note: str = "") -> None:
        settle()
        before = {layer.name for layer in viewer.layers}
        label_before = text_overlay(viewer).visible
        meter.reset()
        if profiler is not None:
            profiler.action = name
        begin = time.perf_counter()
        press()
        finished = wait(done)
        settle(3)  # the result drawn
        seconds = time.perf_counter() - begin
        # work an action leaves for later turns (the frame label's first draw, colour bars) is
        # still its stall: keep measuring a while after the result is on screen
        _linger(app)
        stall = meter.close() * 1000
        if profiler is not None:
            profiler.action = ""
        added[name] = [("layer", layer.as_layer_data_tuple(), _colorbar_shown(layer))
                       for layer in viewer.layers if layer.name not in before]
        if text_overlay(viewer).visible and not label_before:
            added[name].append(("text_overlay", text_overlay(viewer).text))
        rows.append({"action": name, "seconds": round(seconds, 3), "longest_stall_ms": round(stall, 1),
                     "finished": finished, "note": note})
        print(f"{name:<36} {seconds:7.2f} s   longest stall {stall:7.1f} ms{'' if finished else '  (timed out)'}",
              flush=True)

    def sample_action(key: str):
        (menu,) = [a.menu() for a in viewer.window.file_menu.actions() if a.text() == "Open Sample"]
        (ours,) = [a.menu() for a in menu.actions() if a.text() == "Any2Reg cardiac motion correction"]
        titles = {"molli": "Phantom MOLLI 5(3)3 with motion", "stone": "Phantom STONE-like (11 frames)"}
        (entry,) = [a for a in ours.actions() if a.text() == titles[key]]
        return entry.trigger

    settle(20)
    action("open sample MOLLI (first: imports)", sample_action("molli"), note="includes importing torch")
    docks = {}
    for name in ("Registration", "Review", "T1 mapping", "Landmarks", "Export"):
        action(f"add dock {name}", lambda name=name: docks.__setitem__(
            name, viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]))
    action("open sample STONE (second)", sample_action("stone"))
    viewer.layers.remove(viewer.layers["STONE phantom"])
    source = viewer.layers["MOLLI 5(3)3 phantom"]

    # napari's own cost of a new layer of the sample's size: the floor under every action that adds one
    frames = np.random.default_rng(1).random(source.data.shape, dtype=np.float32)
    action("napari alone: add an 8x192x192 image", lambda: viewer.add_image(frames, name="reference", opacity=0.0),
           note="reference: no plugin code")
    viewer.layers.remove(viewer.layers["reference"])

    registration, review, mapping = docks["Registration"], docks["Review"], docks["T1 mapping"]
    registration.layer_combo.setCurrentIndex(registration.layer_combo.findText(source.name))
    registration.engine_combo.setCurrentIndex(registration.engine_combo.findData(args.engine))
    action(f"register ({args.engine})", registration.run_button.click,
           lambda: registration.worker is None and registration.last_result is not None)
    registered = viewer.layers[f"{source.name} registered"]
    action("review QC table", lambda: None, lambda: review.worker is None and review.review is not None,
           note="starts by itself when the registration arrives")
    for button, kind in (("grid_button", "grid"), ("quiver_button", "quiver"), ("jacobian_button", "Jacobian"),
                         ("folding_button", "folding"), ("scores_button", "scores"),
                         ("difference_button", "difference after"), ("checkerboard_button", "checkerboard")):
        action(f"overlay {kind}", getattr(review, button).click,
               lambda kind=kind: f"{registered.name} {kind}" in viewer.layers and not review.busy())
    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    action("T1 fit (raw + registered)", mapping.run_button.click, lambda: not mapping.busy())

    export = docks["Export"]
    folder = Path(tempfile.mkdtemp(prefix="any2reg-gui-stalls-")) / "export"
    export.folder_edit.setText(str(folder))
    action("export", export.export_button.click, lambda: export.worker is None)

    landmarks = docks["Landmarks"]
    action("landmarks: New points layer", landmarks.new_button.click, lambda: landmarks.points_layer() is not None)
    points = landmarks.points_layer()
    rng = np.random.default_rng(0)
    for frame in range(source.data.shape[0]):
        for _ in range(2):
            points.add(np.array([[frame, *rng.uniform(60, 130, 2)]]))
    csv = folder.parent / "landmarks.csv"
    action("landmarks: Export CSV", lambda: landmarks.names.export_csv(csv), lambda: csv.exists())
    action("landmarks: Import CSV", lambda: landmarks.names.import_csv(csv), lambda: landmarks.worker is None)

    meter.timer.stop()
    if profiler is not None:
        profiler.close()
        profile_lines = ["# Where the GUI thread is during stalls", "",
                         "`--profile-stalls`: the main thread's stack sampled every 10 ms while the event loop had "
                         "not ticked for 50 ms; per action the innermost frames of this plugin and of all.", "",
                         "| action | longest stall (ms) | where |", "|---|---:|---|"]
        profile_lines += [f"| {r['action']} | {r['longest_stall_ms']:.0f} | {'<br>'.join(profiler.top(r['action'], 6))} |"
                          for r in rows]
        Path(f"{args.out}_profile.md").write_text("\n".join(profile_lines) + "\n")
    viewer.close()
    floors = _napari_alone(rows, added, args.size)
    for row in rows:
        row["napari_alone_ms"] = floors.get(row["action"])
    after_first = [r for r in rows[1:] if r["finished"]]
    worst = max(after_first, key=lambda r: r["longest_stall_ms"])
    summary = {
        "machine": _machine(),
        "window": list(args.size),
        "engine": args.engine,
        "target_ms": TARGET_MS,
        "rows": rows,
        "worst_after_first_import": worst,
        "over_target": [r["action"] for r in after_first if r["longest_stall_ms"] > TARGET_MS],
        # where this plugin, not napari, makes the wait: the stall beyond napari's own for the same layers
        "over_target_beyond_napari": [
            f"{r['action']} (+{r['longest_stall_ms'] - (r['napari_alone_ms'] or 0):.0f} ms)" for r in after_first
            if r["longest_stall_ms"] > TARGET_MS and r["longest_stall_ms"] - (r["napari_alone_ms"] or 0) > 100],
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# GUI event-loop stalls per action (napari window)",
        "",
        f"`python benchmarks/bench_gui_stalls.py` on {summary['machine']}; window {args.size[0]}x{args.size[1]} "
        f"(Xvfb), MOLLI sample 192x192, engine {args.engine}. Longest gap between the ticks of a 5 ms "
        f"QTimer from the press until {LINGER_S:g} s after the result is on screen (work left for later "
        f"event-loop turns counts). Target: none above {TARGET_MS:.0f} ms after the "
        "first import.",
        "",
        "| action | seconds | longest stall (ms) | napari alone, same layers (ms) | note |",
        "|---|---:|---:|---:|---|",
        *[f"| {r['action']} | {r['seconds']:.2f} | {r['longest_stall_ms']:.0f}{'' if r['finished'] else ' (timed out)'}"
          f" | {_ms(r['napari_alone_ms'])} | {r['note']} |" for r in rows],
        "",
        f"Worst after the first import: {worst['action']} ({worst['longest_stall_ms']:.0f} ms). "
        f"Over {TARGET_MS:.0f} ms: {', '.join(summary['over_target']) or 'none'}. Of these, more than 100 ms "
        f"beyond napari's own stall for the same layers: {', '.join(summary['over_target_beyond_napari']) or 'none'}.",
        "",
        "The row 'napari alone' is napari's own cost of one new image layer in this window, no plugin code "
        "involved: profiled, nearly all of it is vispy building the layer visual's shaders on the GUI thread "
        "(regex parsing of shader templates). Every action that adds a layer stalls at least that long per "
        "layer, so on this machine the target holds only for actions that add no layer; the plugin adds one "
        "layer per event-loop turn (T1 maps, before/after differences) and does its own work in threads. "
        "The load average is in the machine line: on a shared 2-core machine the same action varies by 2x.",
        "",
        "'napari alone, same layers': after the session, a fresh napari window of the same size in which no "
        "plugin code runs adds, action by action and in the same order, the very layers that action added "
        "(their napari data tuples: data, colour maps, text, features), each in its own event-loop turn as "
        "the plugin adds them, then its colour bar where the plugin showed one, and shows the text overlay "
        "where the action first showed it; the longest of those stalls is napari's own floor for that "
        "action's result. An action whose "
        "stall is near its floor spends its GUI time in napari, not in this plugin.",
        "",
    ]
    if profiler is not None:
        lines += [f"Where the GUI thread is during each stall: `{Path(f'{args.out}_profile.md').name}` (`--profile-stalls`).", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


def _linger(app) -> None:
    """Keep the event loop running for LINGER_S seconds (work deferred to later turns is drawn)."""
    end = time.perf_counter() + LINGER_S
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def _colorbar_shown(layer) -> bool:
    colorbar = getattr(layer, "colorbar", None)
    return bool(colorbar is not None and colorbar.visible)


def _ms(value) -> str:
    return "" if value is None else f"{value:.0f}"


def _napari_alone(rows: list[dict], added: dict[str, list], size) -> dict[str, float]:
    """Replay each action's layers in a plugin-free napari window (a subprocess): action -> ms."""
    import pickle
    import subprocess

    replay = [(r["action"], added.get(r["action"], [])) for r in rows if added.get(r["action"])]
    with tempfile.TemporaryDirectory(prefix="any2reg-gui-floor-") as tmp:
        plan, result = Path(tmp) / "plan.pkl", Path(tmp) / "plan.json"
        plan.write_bytes(pickle.dumps(replay))
        completed = subprocess.run([sys.executable, __file__, "--replay", str(plan), "--size", *map(str, size)],
                                   capture_output=True, text=True, timeout=900)
        if completed.returncode != 0 or not result.exists():
            print(f"napari-alone replay failed:\n{completed.stderr[-2000:]}", flush=True)
            return {}
        return json.loads(result.read_text())


def _replay(plan: Path, size) -> int:
    """The --replay subprocess: a napari window in which no plugin code runs (no dock, no reader, no
    sample of this plugin is opened) adds each action's layers in turn."""
    import pickle

    import napari
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_any2reg.widgets._dock import text_overlay  # the overlay napari 0.9 draws (no plugin code runs)

    replay = pickle.loads(plan.read_bytes())
    viewer = napari.Viewer(title="napari alone", show=True)
    viewer.window.resize(*size)
    app = QApplication.instance()
    meter = StallMeter()

    def settle(n: int) -> None:
        for _ in range(n):
            app.processEvents()
            time.sleep(0.005)

    settle(20)
    floors: dict[str, float] = {}
    def step(change) -> float:
        # one change per event-loop turn, drawn, as the plugin adds its layers: the longest stall
        settle(10)
        meter.reset()
        change()
        settle(3)
        _linger(app)
        return meter.close() * 1000

    overlay = text_overlay(viewer)
    for name, items in replay:
        stalls = []
        for item in items:
            if item[0] == "text_overlay":
                stalls.append(step(lambda: (setattr(overlay, "text", item[1]), setattr(overlay, "visible", True))))
                continue
            _, (data, meta, layer_type), colorbar = item
            layer = Layer.create(data, dict(meta), layer_type)
            stalls.append(step(lambda: viewer.add_layer(layer)))
            if colorbar:
                stalls.append(step(lambda: setattr(layer.colorbar, "visible", True)))
        floors[name] = round(max(stalls), 1)
        print(f"napari alone: {name:<36} {floors[name]:7.1f} ms", flush=True)
    meter.timer.stop()
    viewer.close()
    plan.with_suffix(".json").write_text(json.dumps(floors))
    return 0


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores (load {load:.1f}), napari {__import__('napari').__version__}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


if __name__ == "__main__":
    sys.exit(main())
