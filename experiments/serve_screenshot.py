"""The README's screenshot of `src/serve.py`: a hand-written graph loaded, generated, one relation flipped and
generated again with the same seed, in headless Chromium (Debian's package).

    python experiments/serve_screenshot.py RUN_DIR [--graph FILE] [--num 3] [--out docs/img/serve_page.png]
"""
from __future__ import annotations

import argparse
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the project's own CDP client (tests/chromium_cdp.py)


def players_ready(role: str, count: int) -> str:
    return (f"(() => {{ const c = [...document.querySelectorAll('.run[data-role={role}] canvas.player')];"
            f" return c.length === {count} && c.every(p => p.dataset.loaded === '1'); }})()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--graph", type=Path, default=REPO / "experiments/graphs/handwritten/static_3_two_relations.json")
    parser.add_argument("--num", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "serve_page.png")
    args = parser.parse_args()
    from chromium_cdp import Chromium

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        sys.exit("no chromium on PATH (Debian: apt-get install chromium)")
    server = subprocess.Popen([sys.executable, str(REPO / "src" / "serve.py"), f"ckpt={args.run_dir}", "port=0",
                               f"num={args.num}"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        line = server.stdout.readline() if ready else ""
        if "http://" not in line:
            sys.exit(f"serve.py did not start: {line!r}")
        url = line.split(" at ")[1].split()[0]
        with tempfile.TemporaryDirectory() as tmp:
            browser = Chromium(binary, Path(tmp) / "profile", width=1400, height=900)
            try:
                browser.goto(url)
                browser.wait("document.body && document.body.dataset.ready === '1'", what="the page")
                browser.set_files("#load-file", [args.graph.resolve()])
                browser.wait("document.querySelectorAll('#objects li').length > 0", what="the loaded graph")
                browser.click("#generate")
                browser.wait(players_ready("current", args.num), timeout=600, what="the first samples")
                browser.click('[data-where="relations[0]"] .flip')
                browser.click("#generate")
                browser.wait(players_ready("current", args.num) + " && " + players_ready("previous", args.num),
                             timeout=600, what="the flipped graph's samples")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                browser.screenshot(args.out)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
