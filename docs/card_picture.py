"""Draw the README's picture of an incident card as Slack shows it.

    python docs/card_picture.py --out docs/slack-incident-card.png

Runs the demo check in-process as `kpiwatch demo` does, plans the Slack messages with the real
planner (`alerts.incidents.plan_cycle`, feedback buttons on, charts on as with a bot token) and takes the first card
for #kpi-alerts (the demo's mobile slowdown). Its Block Kit blocks are rendered to a static HTML
page styled like a Slack message (Lato, 700 px, white), which headless Chromium screenshots at 2x;
the white space right of and below the card is trimmed with PIL (Pillow, which matplotlib needs).

Chromium is needed only to remake the picture (a dev tool, not a kpiwatch dependency); Debian:
`apt-get install chromium fonts-lato fonts-noto-color-emoji` (Slack's font and the emoji glyphs).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

Block = Mapping[str, Any]

EMOJI = {":red_circle:": "🔴", ":large_orange_circle:": "🟠", ":large_green_circle:": "🟢", ":moneybag:": "💰",
         ":information_source:": "ℹ️", ":speech_balloon:": "💬", ":white_check_mark:": "✅", ":warning:": "⚠️",
         ":grey_question:": "❔"}
LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]+))?>")  # Slack's <url|text> (before HTML escaping)
CODE = re.compile(r"`([^`\n]+)`")
BOLD = re.compile(r"(?<![\w*])\*([^*\n]+?)\*(?![\w*])")
ITALIC = re.compile(r"(?<![\w])_([^_\n]+?)_(?![\w])")  # not the underscores inside page_load_time
BUTTON_STYLES = {"primary": "button primary", "danger": "button danger"}
WIDTH, SCALE = 760, 2  # window width in CSS px; device pixels per CSS px (sharp on retina screens)
CARD = 700  # CSS px: the width of .message below (Slack's message pane); the picture is cropped to it

CSS = """
body { margin: 0; background: #fff; font: 15px/1.47 Lato, "Helvetica Neue", Helvetica, Arial, sans-serif;
       color: #1d1c1d; font-variant-ligatures: none; }
.message { display: flex; gap: 8px; width: 700px; padding: 12px 20px 16px; box-sizing: border-box; }
.avatar { flex: none; width: 36px; height: 36px; border-radius: 6px; background: #4a154b; color: #fff;
          font-weight: 900; font-size: 15px; display: flex; align-items: center; justify-content: center; }
.body { min-width: 0; flex: 1; }
.who b { font-weight: 900; } .tag { font-size: 10px; font-weight: 700; color: #616061; background: #e8e8e8;
       border-radius: 2px; padding: 1px 3px; margin: 0 4px; vertical-align: 2px; }
.time { color: #616061; font-size: 12px; }
.header { font-size: 18px; font-weight: 900; line-height: 1.33; margin: 4px 0 6px; }
.section { margin: 4px 0 8px; overflow-wrap: anywhere; }
.context { font-size: 12px; color: #616061; margin: 4px 0 8px; }
code { font: 12px Monaco, Menlo, Consolas, "Courier New", monospace; color: #e01e5a; background: #f8f8f8;
       border: 1px solid #e0e0e0; border-radius: 3px; padding: 1px 3px; }
a { color: #1264a3; text-decoration: none; } hr { border: 0; border-top: 1px solid #dddddd; margin: 10px 0; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 10px; }
.button { font: 700 13px Lato, "Helvetica Neue", Helvetica, Arial, sans-serif; height: 28px; padding: 0 12px;
          border-radius: 4px; border: 1px solid #bbbabb; background: #fff; color: #1d1c1d; }
.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.danger { background: #fff; border-color: #e01e5a; color: #e01e5a; }
"""


def demo_card() -> list[Block]:
    """The blocks of the first #kpi-alerts card the demo check plans (as `kpiwatch demo` runs it)."""
    from alerts.incidents import plan_cycle
    from forecaster.catalog import bundled_config_text
    from forecaster.demo import DEMO_NOW
    from forecaster.pipeline import check
    from forecaster.settings import parse_config

    settings = parse_config(bundled_config_text("kpiwatch.yaml"), origin="config/kpiwatch.yaml")
    report = check(settings, at=DEMO_NOW)
    plan = plan_cycle(report, settings, {}, [], DEMO_NOW.to_pydatetime(), charts=True, buttons=True)
    card = next(i for i in plan.items if i.kind == "message" and i.channel == "#kpi-alerts")
    return list(card.payload["blocks"])


def plain(text: str) -> str:
    """A plain_text object's text as HTML: escaped, emoji shortcodes as Unicode."""
    return emoji(html.escape(text))


def emoji(text: str) -> str:
    return re.sub(r":[a-z0-9_+-]+:", lambda m: EMOJI.get(m.group(0), m.group(0)), text)


def mrkdwn(text: str) -> str:
    """Slack mrkdwn as HTML: <url|text> links, `code`, *bold*, _italic_, emoji, line breaks.

    Slack escapes &, < and > in mrkdwn as entities; they are undone before HTML escaping so an
    `&amp;` shows as `&`, and a literal `<` can only come from a link."""
    out, pos = [], 0
    for m in LINK.finditer(text):
        out.append(_inline(text[pos:m.start()]))
        url, label = _unslack(m.group(1)), _unslack(m.group(2) or m.group(1))
        out.append(f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>')
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out).replace("\n", "<br>")


def _unslack(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _inline(text: str) -> str:
    parts = CODE.split(_unslack(text))  # odd items are code spans: no formatting inside them
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else
                   emoji(ITALIC.sub(r"<i>\1</i>", BOLD.sub(r"<b>\1</b>", html.escape(p))))
                   for i, p in enumerate(parts))


def block_html(block: Block) -> str:
    """One Block Kit block as HTML (header, section, context, actions, divider; others skipped)."""
    kind = block["type"]
    if kind == "header":
        return f'<div class="header">{plain(block["text"]["text"])}</div>'
    if kind == "section":
        return f'<div class="section">{mrkdwn(block["text"]["text"])}</div>'
    if kind == "context":
        parts = (mrkdwn(e["text"]) if e["type"] == "mrkdwn" else plain(e.get("text", "")) for e in block["elements"])
        return '<div class="context">' + " ".join(parts) + "</div>"
    if kind == "actions":
        return '<div class="actions">' + "".join(
            f'<button class="{BUTTON_STYLES.get(e.get("style", ""), "button")}">{plain(e["text"]["text"])}</button>'
            for e in block["elements"] if e["type"] == "button") + "</div>"
    return "<hr>" if kind == "divider" else ""


def page(blocks: Sequence[Block], time: str) -> str:
    """The whole HTML page: one message from the kpiwatch app."""
    body = "\n".join(block_html(b) for b in blocks)
    return (f'<!doctype html><html><head><meta charset="utf-8"><style>{CSS}</style></head><body>'
            f'<div class="message"><div class="avatar">kw</div><div class="body">'
            f'<div class="who"><b>kpiwatch</b><span class="tag">APP</span><span class="time">{time}</span></div>'
            f'\n{body}\n</div></div></body></html>')


def screenshot(html_path: Path, out: Path, blocks: int) -> None:
    """Screenshot the page with headless Chromium, then trim the white space right of and below
    the card; 256 colours keep the PNG small (text and emoji still read sharply)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("needs Chromium (Debian: apt-get install chromium)")
    height = 200 + 160 * blocks  # generous; trimmed below
    subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                    f"--force-device-scale-factor={SCALE}", f"--window-size={WIDTH},{height}",
                    f"--screenshot={out.resolve()}", html_path.resolve().as_uri()],
                   check=True, capture_output=True)
    image = Image.open(out).convert("RGB")
    box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    bottom = min(image.height, (box[3] if box else image.height) + 16 * SCALE)
    card = image.crop((0, 0, min(image.width, CARD * SCALE), bottom))
    card.quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/slack-incident-card.png"))
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    args = parser.parse_args()
    from forecaster.demo import DEMO_NOW, DEMO_TIMEZONE

    blocks = demo_card()
    text = page(blocks, DEMO_NOW.tz_convert(DEMO_TIMEZONE).strftime("%-I:%M %p"))
    with tempfile.TemporaryDirectory() as tmp:
        html_path = args.html or Path(tmp) / "card.html"
        html_path.write_text(text, encoding="utf-8")
        screenshot(html_path, args.out, len(blocks))
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":  # the check's worker processes import this module again
    main()
