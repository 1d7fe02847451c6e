#!/usr/bin/env python3
"""The web page in a real browser: Debian's headless chromium driven by chromedriver over raw WebDriver HTTP
(Python standard library only, no pip packages).

  browser-test.py --evident BUILD/api/evident --corpus tests/api/corpus --out BUILD/tests/web/artefacts

Steps: ingest the corpus into a fresh store with `evident ingest`, start `evident serve --port 0`, load the page, ask a
question, wait for the streamed answer, hover a citation chip (tooltip with quote + verdict), click it (side panel with
the passage highlighted: the highlighted text must contain the quote the API reports), open the reasoning, look at the
documents view and at phone width. Screenshots of each step go to --out. Exit status 0 only when every check passes.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pyutil"))
import evident_server  # noqa: E402

QUESTION = "Who received the Nobel Prize for decoding the waggle dance?"
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def cp_slice(text, start, end):
    """Python strings index code points, as the API's offsets do."""
    return text[start:end]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method, url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None


class WebDriver:
    """The few W3C WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--force-device-scale-factor=1", "--lang=en-US"]}}}}
        self.session = http_json("POST", f"{self.base}/session", caps)["value"]["sessionId"]

    def cmd(self, method, path, body=None):
        return http_json(method, f"{self.base}/session/{self.session}{path}", body)["value"]

    def go(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        v = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def click(self, element):
        self.cmd("POST", f"/element/{element}/click", {})

    def type(self, element, text):
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def hover(self, element):
        self.cmd("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                                                   "actions": [{"type": "pointerMove", "duration": 0, "x": 0, "y": 0,
                                                                "origin": {"element-6066-11e4-a52e-4f735466cecf": element}}]}]})

    def window(self, width, height):
        self.cmd("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))
        print(f"     screenshot {path}", flush=True)

    def wait(self, script, what, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            v = self.js(script)
            if v:
                return v
            time.sleep(0.1)
        check(False, f"timed out waiting for {what}")
        return None

    def quit(self):
        try:
            http_json("DELETE", f"{self.base}/session/{self.session}")
        except Exception:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evident", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    store = os.path.join(out, "store")

    evident_server.ingest(args.evident, args.corpus, store, "--collection", "demo")
    server, port = evident_server.start(args.evident, store, os.path.join(out, "serve.log"), "--workers", "2")
    driver_port = free_port()
    chromedriver = subprocess.Popen([shutil.which("chromedriver") or "/usr/bin/chromedriver", f"--port={driver_port}"],
                                    stdout=open(os.path.join(out, "chromedriver.log"), "w"), stderr=subprocess.STDOUT)
    wd = None
    try:
        for _ in range(100):
            try:
                http_json("GET", f"http://127.0.0.1:{driver_port}/status")
                break
            except Exception:
                time.sleep(0.1)
        wd = WebDriver(driver_port)
        site = f"http://127.0.0.1:{port}"
        wd.go(site + "/")
        wd.wait("return document.querySelector('#collection').options.length > 1", "the collection list")
        check(wd.js("return document.title") == "evident", "page title is evident")
        # The header is filled by a second request (/readyz) after the collection list: wait for it, then check it.
        status_text = wd.wait("return document.getElementById('server-status').textContent", "the server status")
        check("extractive" in (status_text or ""), f"the header says answers are extractive: {status_text!r}")

        # Ask and wait for the streamed answer to finish.
        wd.type(wd.find("#question"), QUESTION)
        wd.click(wd.find("#ask"))
        wd.wait("return document.getElementById('answer').dataset.done === 'true'", "the streamed answer")
        answer = wd.js("return document.getElementById('answer').textContent")
        check("Frisch" in answer, f"the answer names von Frisch: {answer!r}")
        status = wd.js("return document.getElementById('status').textContent")
        check("Extractive" in status, f"the status line says the answer is extractive: {status!r}")
        chips = wd.js("return document.querySelectorAll('#answer .chip:not(.pending)').length")
        check(chips >= 1, f"the answer has resolved citation chips ({chips})")
        wd.screenshot(os.path.join(out, "1-answer.png"))

        # The API's view of the same answer: the quote the highlighted passage must contain.
        answer_id = wd.js("return document.getElementById('result').dataset.answerId")
        stored = http_json("GET", f"{site}/v1/answers/{answer_id}")
        check(len(stored["citations"]) >= 1, "the stored answer has citations")
        first = stored["citations"][0]

        chip = wd.find("#answer .chip:not(.pending)")
        wd.hover(chip)
        wd.wait("return !document.getElementById('tooltip').hidden", "the tooltip")
        tip = wd.js("return document.getElementById('tooltip').textContent")
        check(first["quote"][:40] in tip, "the tooltip shows the quote")
        check("verified" in tip, f"the tooltip shows the verdict: {tip!r}")
        wd.screenshot(os.path.join(out, "2-tooltip.png"))

        wd.click(chip)
        wd.wait("const m = document.querySelector('#panel-text mark'); return m && m.textContent.length > 0",
                "the highlighted passage")
        mark = wd.js("return document.querySelector('#panel-text mark').textContent")
        # Whitespace is compared collapsed, and the quote's final punctuation is not required (the pipeline's span
        # ends at the last word: "... decoding this dance" for the quote "... decoding this dance.").
        norm = lambda s: " ".join(s.split()).rstrip(".,;:!?")
        check(norm(first["quote"]) in norm(mark), f"the highlighted passage {mark!r} contains the quote {first['quote']!r}")
        check(norm(mark) == norm(cp_slice(http_json("GET", f"{site}/v1/documents/{first['document_id']}")["text"],
                                          first["char_start"], first["char_end"])),
              "the highlight is exactly the API's code-point span of the document text")
        meta = wd.js("return document.getElementById('panel-meta').textContent")
        check(f"page {first['page']}" in meta, f"the panel shows the page number: {meta!r}")
        wd.screenshot(os.path.join(out, "3-panel.png"))
        wd.js("document.getElementById('panel-close').click()")

        # The reasoning section is collapsed until opened.
        check(wd.js("return !document.getElementById('reasoning').hidden && !document.getElementById('reasoning').open"),
              "the reasoning section is there and collapsed")
        wd.click(wd.find("#reasoning summary"))
        check(wd.js("return document.getElementById('reasoning').open"), "the reasoning opens on click")
        check(len(wd.js("return document.getElementById('reasoning-text').textContent")) > 0, "the reasoning has text")
        wd.screenshot(os.path.join(out, "4-reasoning.png"))

        # Recent questions are remembered (localStorage) and listed.
        check(QUESTION in wd.js("return document.getElementById('recent').textContent"), "recent questions list it")

        # A question the documents do not answer is shown as such.
        wd.js("document.getElementById('question').value = ''")
        wd.type(wd.find("#question"), "What is the boiling point of liquid nitrogen at sea level?")
        wd.click(wd.find("#ask"))
        wd.wait("return document.getElementById('answer').dataset.done === 'true'", "the second answer")
        check(wd.js("return !document.getElementById('not-found').hidden"), "'not in the documents' is shown")
        wd.screenshot(os.path.join(out, "5-not-found.png"))

        # Documents view: list, search, open.
        wd.click(wd.find("#tab-docs"))
        wd.wait("return document.querySelectorAll('#doc-list tr button.link').length >= 3", "the document list")
        wd.type(wd.find("#doc-search"), "bees")
        rows = wd.js("return document.querySelectorAll('#doc-list tr button.link').length")
        check(rows == 1, f"searching 'bees' leaves one document ({rows})")
        wd.click(wd.find("#doc-list tr button.link"))
        wd.wait("return document.getElementById('panel-text').textContent.includes('waggle')", "the opened document")
        wd.screenshot(os.path.join(out, "6-documents.png"))
        wd.js("document.getElementById('panel-close').click()")

        # Upload a file through the page, then delete it (accepting the confirm dialog).
        upload_path = os.path.join(out, "okapi.txt")
        with open(upload_path, "w") as f:
            f.write("The okapi lives in the rainforests of the Congo. It is the only living relative of the giraffe.\n")
        wd.js("document.getElementById('doc-search').value = ''; document.getElementById('doc-search')"
              ".dispatchEvent(new Event('input'))")
        wd.type(wd.find("#upload-files"), upload_path)
        wd.click(wd.find("#upload-form button[type=submit]"))
        wd.wait("return document.getElementById('upload-status').textContent.startsWith('Added')", "the upload")
        wd.wait("return [...document.querySelectorAll('#doc-list td.path')].some(td => td.textContent === 'okapi.txt')",
                "the uploaded document in the list")
        docs = http_json("GET", f"{site}/v1/documents")["documents"]
        check(any(d["path"] == "okapi.txt" for d in docs), "the upload reached the store")
        wd.screenshot(os.path.join(out, "6b-uploaded.png"))
        wd.click(wd.find("button[aria-label='Delete okapi.txt']"))
        wd.cmd("POST", "/alert/accept", {})
        wd.wait("return ![...document.querySelectorAll('#doc-list td.path')].some(td => td.textContent === 'okapi.txt')",
                "the deleted document gone from the list")
        docs = http_json("GET", f"{site}/v1/documents")["documents"]
        check(not any(d["path"] == "okapi.txt" for d in docs), "the delete reached the store")

        # Phone width: the page still lays out in one column without horizontal scrolling.
        wd.window(390, 844)
        wd.click(wd.find("#tab-ask"))
        time.sleep(0.3)
        overflow = wd.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        check(overflow <= 1, f"no horizontal scrolling at phone width (overflow {overflow}px)")
        wd.screenshot(os.path.join(out, "7-phone.png"))
    finally:
        if wd:
            wd.quit()
        chromedriver.terminate()
        rc = evident_server.stop(server)
        check(rc is not None, "evident serve stops within 30 s of SIGTERM")
        check(rc == 0, f"evident serve exits 0 on SIGTERM (got {rc})")
        chromedriver.wait(timeout=10)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed", file=sys.stderr)
        return 1
    print("all browser checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
