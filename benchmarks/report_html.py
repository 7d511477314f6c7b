"""``report.html``: the report as one self-contained page, to see the difference as well as read it.

Beside what ``report.md`` holds (the same tables, from :mod:`benchmarks.tables`, and the plots) it
shows, for each quality dataset, crops of a few images side by side (HR, bicubic, every measured
form), labelled with their PSNR/SSIM and enlarged with nearest-neighbour so the pixels show, and a
before/after slider (bicubic against the best model) that follows the mouse and the keyboard. Every
image is embedded as a data URI and the script and styles are inline; the page's Content Security
Policy forbids any other source, so it reads the same offline, from a CI artifact or an e-mail.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from benchmarks.tables import Table, environment_lines, fmt, report_tables, skipped_lines

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 1.2rem 3rem; color: #1b1b1b; background: #fff; }
h1 { margin: 1.2rem 0 .3rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
nav a { margin-right: .8em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .45rem; text-align: left; white-space: nowrap; }
th { background: #f6f6f6; } tr:nth-child(even) td { background: #fbfbfb; }
.pixels { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
.panel { margin: 1rem 0 1.6rem; }
.panel h4 { margin: .2rem 0 .4rem; } .panel small { color: #666; font-weight: normal; }
.tiles { display: flex; flex-wrap: wrap; gap: .6rem; }
.tile { margin: 0; font-size: 12px; }
.tile figcaption { max-width: 200px; } .tile b { display: block; }
.slider { position: relative; display: inline-block; cursor: ew-resize; user-select: none; touch-action: none;
          --pos: 50%; outline: 1px solid #ccc; }
.slider img { position: absolute; left: 0; top: 0; }
.slider img.after { position: relative; }
.slider img.before { clip-path: inset(0 calc(100% - var(--pos)) 0 0); }
.slider .handle { position: absolute; top: 0; bottom: 0; left: var(--pos); width: 2px; margin-left: -1px;
                  background: #fff; box-shadow: 0 0 0 1px rgba(0,0,0,.5); pointer-events: none; }
.slider .tag { position: absolute; top: .3rem; padding: 0 .3rem; font-size: 12px; background: rgba(0,0,0,.6);
               color: #fff; pointer-events: none; }
.slider .tag.left { left: .3rem; } .slider .tag.right { right: .3rem; }
#slider-range { display: block; margin: .4rem 0; }
.plots img { max-width: 100%; border: 1px solid #eee; }
"""

_SCRIPT = """
(function () {
  var box = document.getElementById("slider");
  var range = document.getElementById("slider-range");
  if (!box || !range) { return; }
  function set(value) {
    var v = Math.max(0, Math.min(100, value));
    range.value = String(v);
    box.style.setProperty("--pos", v + "%");
  }
  function follow(event) {
    var r = box.getBoundingClientRect();
    set((event.clientX - r.left) / r.width * 100);
  }
  range.addEventListener("input", function () { set(Number(range.value)); });
  box.addEventListener("pointerdown", function (e) { box.setPointerCapture(e.pointerId); follow(e); range.focus(); });
  box.addEventListener("pointermove", function (e) { if (box.hasPointerCapture(e.pointerId)) { follow(e); } });
  set(Number(range.value));
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _inline_code(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _data_uri(out: Path, relative: str) -> str:
    """The PNG at ``out/relative`` as a data URI. Raises SRError when it is missing."""
    from sr_runtime.errors import SRError

    path = out / relative
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SRError(f"report.html embeds {path}, which cannot be read ({e}); rerun sr-bench") from e
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    intro = f"<p>{_inline_code(table.intro)}</p>" if table.intro else ""
    return (f'<section id="{_anchor(table.title)}"><h2>{_esc(table.title)}</h2>{intro}'
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>')


def _scores(tile: dict[str, Any]) -> str:
    if tile["psnr"] is None:
        return "ground truth"
    text = f"{fmt(tile['psnr'])} dB / {fmt(tile['ssim'], 4)}"
    if tile.get("crop_psnr") is not None:
        text += f"; crop {fmt(tile['crop_psnr'], 1)} dB"
    return text


def _img(out: Path, file: str, alt: str, size: tuple[int, int], zoom: int, css: str = "pixels") -> str:
    h, w = size
    return (f'<img class="{css}" src="{_data_uri(out, file)}" alt="{_esc(alt)}" width="{w * zoom}" '
            f'height="{h * zoom}">')


def _panel(out: Path, panel: dict[str, Any]) -> str:
    y, x, h, w = panel["box"]
    tiles = "".join(
        f'<figure class="tile">{_img(out, t["file"], t["label"], (h, w), panel["zoom"])}'
        f'<figcaption><b>{_esc(t["label"])}</b>{_esc(_scores(t))}</figcaption></figure>'
        for t in panel["tiles"]
    )
    return (f'<div class="panel"><h4>{_esc(panel["image"])} <small>{w}x{h} at ({x}, {y}), '
            f'x{panel["zoom"]}</small></h4><div class="tiles">{tiles}</div></div>')


def _slider(out: Path, slider: dict[str, Any]) -> str:
    y, x, h, w = slider["box"]
    zoom = slider["zoom"]
    before, after = slider["before"], slider["after"]
    return (
        f'<h3>Before and after: {_esc(slider["dataset"])} {_esc(slider["image"])} x{slider["scale"]}</h3>'
        f'<p>Bicubic (left of the line) against the best model on this image, {_esc(after["label"])} '
        f'({_esc(_scores(after))}; bicubic {_esc(_scores(before))}): {w}x{h} HR pixels at ({x}, {y}), '
        f'x{zoom} nearest-neighbour. Drag on the picture, or use the slider below with the arrow keys.</p>'
        f'<div class="slider" id="slider">'
        f'{_img(out, after["file"], "after: " + after["label"], (h, w), zoom, "pixels after")}'
        f'{_img(out, before["file"], "before: bicubic", (h, w), zoom, "pixels before")}'
        f'<div class="handle"></div><span class="tag left">bicubic</span>'
        f'<span class="tag right">{_esc(after["label"])}</span></div>'
        f'<input type="range" id="slider-range" min="0" max="100" step="1" value="50" style="width: {w * zoom}px" '
        f'aria-label="bicubic to {_esc(after["label"])}: where the line is, in percent" aria-controls="slider">'
    )


def _side_by_side(out: Path, gallery: dict[str, Any] | None) -> str:
    parts = ['<section id="see"><h2>See the difference</h2>']
    if not gallery or not gallery.get("panels"):
        parts.append("<p>No crops: no quality dataset was scored in this run (see Not measured), or "
                     "<code>--crop-images 0</code>.</p></section>")
        return "".join(parts)
    if gallery.get("slider"):
        parts.append(_slider(out, gallery["slider"]))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for panel in gallery["panels"]:
        groups.setdefault((panel["dataset"], panel["scale"]), []).append(panel)
    for (dataset, scale), panels in groups.items():
        parts.append(f"<h3>{_esc(dataset)} x{scale}</h3><p>For each image, the window (HR pixels) where the methods "
                     "differ most among a few where bicubic is furthest from HR, enlarged with nearest-neighbour. "
                     "Under each crop: PSNR / SSIM of the whole image (Y channel, the protocol of the Quality "
                     "table), and the PSNR of the crop itself.</p>")
        parts += [_panel(out, p) for p in panels]
    parts.append("</section>")
    return "".join(parts)


def render_html(data: dict[str, Any], out: str | Path) -> str:
    """The page for a results dict whose crops and plots (paths relative to ``out``) are under ``out``.
    Raises SRError when one of them is missing."""
    out = Path(out)
    tables = report_tables(data)
    plots = data.get("plots") or []
    head = f"<p>Command: <code>{_esc(data['command'])}</code>" if data.get("command") else "<p>"
    if data.get("wall_s"):
        head += f" (wall time {data['wall_s']:.0f} s)"
    nav = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in
                  [("see", "See the difference"), ("environment", "Environment")]
                  + [(_anchor(t.title), t.title) for t in tables]
                  + ([("skipped", "Not measured")] if data["skipped"] else []) + ([("plots", "Plots")] if plots else []))
    body = [
        "<header><h1>sr-bench report</h1>", head + "</p>", f"<nav>{nav}</nav></header>",
        _side_by_side(out, data.get("gallery")),
        '<section id="environment"><h2>Environment</h2><ul>'
        + "".join(f"<li>{_esc(line)}</li>" for line in environment_lines(data["environment"])) + "</ul></section>",
        *(_table(t) for t in tables),
    ]
    if data["skipped"]:
        body.append('<section id="skipped"><h2>Not measured</h2><ul>'
                    + "".join(f"<li>{_esc(line)}</li>" for line in skipped_lines(data["skipped"])) + "</ul></section>")
    if plots:
        body.append('<section id="plots" class="plots"><h2>Plots</h2>' + "".join(
            f'<figure><img src="{_data_uri(out, Path(p).name)}" alt="{_esc(Path(p).stem)}">'
            f"<figcaption>{_esc(Path(p).stem)}</figcaption></figure>" for p in plots) + "</section>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>sr-bench report</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
