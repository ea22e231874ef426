"""The report page's frame: its style, its few lines of script, and the policy that keeps it local.

The Content-Security-Policy allows nothing from outside the file (no fetch, no font, no
image), so a report opened on a lab machine with no network looks the same as anywhere, and
device text that slipped through as markup could load nothing.
"""

from __future__ import annotations

from html import escape

POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --pass: #15803d; --fail: #b91c1c;
  --error: #c2410c; --skip: #6b7280; --bad-bg: #fef2f2; --note-bg: #f3f4f6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #f8fafc; }
header.top { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 12px;
  align-items: center; padding: 10px 24px; background: #111827; color: #f9fafb; }
header.top h1 { font-size: 17px; margin: 0 12px 0 0; }
header.top .sub { color: #d1d5db; font-size: 13px; }
header.top .tools { margin-left: auto; display: flex; gap: 6px; }
input[type=search] { width: 260px; padding: 5px 8px; border-radius: 4px;
  border: 1px solid #9ca3af; }
button { padding: 5px 10px; border-radius: 4px; border: 1px solid #9ca3af; background: #f9fafb;
  cursor: pointer; font: inherit; font-size: 13px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 48px; }
section.block { background: white; border: 1px solid var(--line); border-radius: 8px;
  padding: 4px 20px 16px; margin: 16px 0; }
h2 { font-size: 20px; margin: 14px 0 8px; }
h3 { font-size: 16px; margin: 20px 0 8px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h4 { font-size: 14px; margin: 12px 0 6px; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 12.5px; }
pre { white-space: pre-wrap; word-break: break-word; background: #f9fafb; padding: 8px 10px;
  border: 1px solid var(--line); border-radius: 4px; max-height: 480px; overflow: auto; }
a { color: #1d4ed8; }
.verdict { display: inline-block; min-width: 58px; text-align: center; padding: 1px 8px;
  border-radius: 10px; font-size: 12px; font-weight: 600; color: white; }
.verdict.passed { background: var(--pass); } .verdict.failed { background: var(--fail); }
.verdict.error { background: var(--error); } .verdict.skipped { background: var(--skip); }
.verdict.interrupted { background: var(--error); }
dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 3px 14px;
  margin: 8px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
table.measures { width: auto; min-width: 50%; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.lines td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 12px; padding: 1px 8px; border-bottom: none; white-space: pre-wrap;
  word-break: break-word; }
table.lines td.when, table.lines td.rel, table.lines td.src { white-space: nowrap;
  color: var(--muted); }
table.lines tr.bad td { background: var(--bad-bg); color: var(--fail); font-weight: 600; }
table.lines tr.harness td.text { color: #4b5563; font-style: italic; }
table.lines tr.out td.src { color: #7c3aed; } table.lines tr.in td.src { color: #0e7490; }
.failure { border-left: 4px solid var(--fail); padding: 4px 14px 8px; margin: 12px 0;
  background: #fffafa; }
.failure.error { border-left-color: var(--error); }
.message { font-weight: 600; color: var(--fail); white-space: pre-wrap; overflow-wrap: anywhere; }
.failure.error .message { color: var(--error); }
.alerts { border: 1px solid #fca5a5; background: var(--bad-bg); border-radius: 8px;
  padding: 6px 20px 10px; margin: 16px 0; }
.alerts h2 { color: var(--fail); font-size: 17px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.plots figure { margin: 0; }
.plots figcaption { font-size: 12px; color: var(--muted); max-width: 320px;
  overflow-wrap: anywhere; }
svg.plot { max-width: 100%; height: auto; background: white; }
svg.plot .point:hover { stroke: #111827; stroke-width: 2; }
details.test { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0;
  background: white; }
details.test > summary { cursor: pointer; padding: 6px 10px; display: flex; gap: 10px;
  align-items: baseline; list-style-position: inside; }
details.test > summary .name { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
  font-size: 12.5px; overflow-wrap: anywhere; }
details.test > summary .dur { margin-left: auto; color: var(--muted); white-space: nowrap; }
details.test > .body { padding: 4px 14px 12px; border-top: 1px solid var(--line); }
details.inner > summary { cursor: pointer; color: #1d4ed8; margin: 8px 0 4px; }
.muted { color: var(--muted); }
.out-of-limits { color: var(--fail); font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12.5px; margin: 6px 0 10px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 5px; vertical-align: -1px; }
[hidden] { display: none !important; }
"""

SCRIPT = """
const filter = document.getElementById("filter");
filter.addEventListener("input", () => {
  const words = filter.value.toLowerCase().trim();
  for (const item of document.querySelectorAll("[data-nodeid]")) {
    item.hidden = words !== "" && !item.dataset.nodeid.toLowerCase().includes(words);
  }
});
for (const [id, open] of [["expand", true], ["collapse", false]]) {
  document.getElementById(id).addEventListener("click", () => {
    for (const item of document.querySelectorAll("details.test")) item.open = open;
  });
}
"""


def page(title: str, subtitle: str, body: str) -> str:
    """The whole HTML document around `body` (already escaped markup)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<header class="top"><h1>{escape(title)}</h1><span class="sub">{escape(subtitle)}</span>'
        '<div class="tools"><input type="search" id="filter" placeholder="Filter tests by name"'
        ' aria-label="Filter tests by name">'
        '<button type="button" id="expand">Expand all</button>'
        '<button type="button" id="collapse">Collapse all</button></div></header>\n'
        f"<main>\n{body}\n</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
