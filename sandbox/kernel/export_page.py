"""``GET /sbx/exports``: the sandbox's own page for requesting an export without code.

It lists the workspace's files (not hidden ones, not links, at most :data:`MAX_LISTED`),
lets the applicant tick some and say what they are and why they are safe, and posts the
request to ``POST /sbx/exports`` in the same authenticated session (with Jupyter's XSRF
token), then shows the answer: the export's status and its page in the platform's
console. zh-CN first, with English beside.
"""

from __future__ import annotations

import html
import os
import stat
from pathlib import Path

MAX_LISTED = 1000

PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>申请导出 · Request an export</title>
<style>
body {{ font-family: sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }}
label {{ display: block; margin: .3rem 0; }}
textarea {{ width: 100%; }}
.muted {{ color: #555; }}
</style>
</head>
<body>
<h1>申请导出 <small class="muted">Request an export</small></h1>
<p>所选文件经平台的自动检查和人工审核后，才能以签名成果包的形式下载；
请只选择汇总结果。<br><span class="muted">Files leave only after the platform's checks and
a reviewer's approval, as a signed bundle; choose aggregated results only.</span></p>
<form id="export">
<fieldset>
<legend>工作区文件 <span class="muted">Workspace files</span></legend>
{files}
</fieldset>
<label>说明：文件是什么、为何可以安全发布
<span class="muted">What the files are and why they are safe to release</span>
<textarea name="description" rows="4" required maxlength="4000"></textarea></label>
<button type="submit">提交导出申请 · Request the export</button>
</form>
<p id="answer" role="status"></p>
<script>
document.getElementById("export").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const form = event.target;
  const files = [...form.querySelectorAll("input[name=file]:checked")].map((i) => i.value);
  const answer = document.getElementById("answer");
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  answer.textContent = "提交中… Sending…";
  const sent = await fetch(location.pathname, {{
    method: "POST",
    headers: {{"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)}},
    body: JSON.stringify({{files: files, description: form.description.value}}),
  }});
  const body = await sent.json();
  answer.textContent = sent.ok
    ? `导出 ${{body.id}}：${{body.status}}，${{body.findings}} 项发现` +
      `（${{body.blocking}} 项阻止）；请在平台控制台 ${{body.url}} 跟进。 ` +
      `Export ${{body.id}}: ${{body.status}}; ` +
      `follow it at ${{body.url}} in the platform's console.`
    : `未提交 Not sent: ${{body.message || sent.status}}`;
}});
</script>
</body>
</html>
"""


def workspace_files(root: Path, limit: int = MAX_LISTED) -> list[tuple[str, int]]:
    """The workspace's regular files under ``root`` as (relative name, size), sorted,
    without hidden files or folders and without following links."""
    found: list[tuple[str, int]] = []
    for folder, folders, names in os.walk(root, followlinks=False):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append((path.relative_to(root).as_posix(), info.st_size))
            if len(found) >= limit:
                return found
    return found


def render_page(files: list[tuple[str, int]]) -> str:
    items = "\n".join(
        f'<label><input type="checkbox" name="file" value="{html.escape(name)}"> '
        f'<code>{html.escape(name)}</code> <span class="muted">{size:,} B</span></label>'
        for name, size in files
    )
    empty = '<p class="muted">工作区里还没有文件。 The workspace has no files yet.</p>'
    return PAGE.format(files=items or empty)
