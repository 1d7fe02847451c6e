#!/usr/bin/env python3
"""The OpenAI-compatible endpoint with the real `openai` Python client (pip package `openai`), unchanged:
  openai-client-test.py --evident BUILD/api/evident --corpus tests/api/corpus --out DIR
Ingests the corpus, starts `evident serve --port 0`, asks through client.chat.completions.create without and with
stream=True, and checks the answer, reasoning_content and the extra `citations` field. Exit 0 only when all pass."""
import argparse
import os
import shutil
import sys

import openai

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pyutil"))
import evident_server  # noqa: E402

QUESTION = "Who built the third Eddystone lighthouse?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evident", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    store = os.path.join(a.out, "store")
    evident_server.ingest(a.evident, a.corpus, store)
    server, port = evident_server.start(a.evident, store, os.path.join(a.out, "serve.log"))
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed", max_retries=0)

        r = client.chat.completions.create(model="evident", temperature=0.2, max_tokens=512,
                                           messages=[{"role": "system", "content": "Answer from the documents."},
                                                     {"role": "user", "content": QUESTION}])
        msg = r.choices[0].message
        check(r.object == "chat.completion", "object is chat.completion")
        check("Smeaton" in (msg.content or ""), f"the answer names Smeaton: {msg.content!r}")
        extra = r.model_extra or {}
        check(len(extra.get("citations", [])) >= 1, "citations in the extra field")
        check(all(c["verdict"] == "supported" for c in extra.get("citations", [])), "every citation is supported")
        reasoning = (msg.model_extra or {}).get("reasoning_content", "")
        check(len(reasoning) > 0, "reasoning_content is there")
        check(r.usage is not None and r.usage.total_tokens >= r.usage.completion_tokens, "usage is consistent")

        content, reasoning, finish, citations, ids = "", "", None, [], set()
        for chunk in client.chat.completions.create(model="evident", stream=True,
                                                    messages=[{"role": "user", "content": QUESTION}]):
            ids.add(chunk.id)
            if chunk.choices:
                d = chunk.choices[0].delta
                content += d.content or ""
                reasoning += (d.model_extra or {}).get("reasoning_content") or ""
                finish = chunk.choices[0].finish_reason or finish
            citations += (chunk.model_extra or {}).get("citations") or []
        check("Smeaton" in content, f"the streamed answer names Smeaton: {content!r}")
        check(len(reasoning) > 0, "streamed reasoning_content")
        check(finish == "stop", f"finish_reason stop ({finish!r})")
        check(len(citations) >= 1, "citations in the last chunk")
        check(len(ids) == 1, "one id for the whole stream")

        try:
            client.chat.completions.create(model="evident", messages=[])
            check(False, "an empty message list is refused")
        except openai.UnprocessableEntityError as e:
            check(e.status_code == 422, "an empty message list is a 422 the client raises as UnprocessableEntityError")
    finally:
        evident_server.stop(server)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all OpenAI client checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
