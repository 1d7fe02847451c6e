#!/usr/bin/env python3
"""Regenerates tests/fixtures/tokenizer/*.jsonl: reference token ids and chat-template renderings for the C++ tokenizer.

Reference implementations (independent of our C++):
  - ids:  the Hugging Face `tokenizers` package, Tokenizer.from_file(<shared>/models/qwen3-tokenizer/tokenizer.json),
          encode(text, add_special_tokens=False) (the Qwen3 post-processor adds nothing either way).
  - chat: the Jinja chat template of <shared>/models/qwen3-tokenizer/tokenizer_config.json rendered with jinja2 the way
          transformers' apply_chat_template does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
          loopcontrols, a tojson filter that keeps non-ASCII).

The shared tokenizer_config.json carries the Qwen3 *hybrid* template (generation prompt `<|im_start|>assistant\n`, plus
an empty think block when enable_thinking is false). Qwen3-Next-80B-A3B-Thinking ships the Thinking template, which for
plain string messages differs only in its generation prompt: it always opens `<|im_start|>assistant\n<think>\n`. The
"thinking" fixtures therefore render the shared template with its final generation-prompt block replaced by the
Thinking one (see THINKING_GENERATION_PROMPT); the "hybrid" fixtures render the shared template as it is.

Usage: pip install tokenizers jinja2 && python3 tools/reference/make_tokenizer_fixtures.py [--shared ../shared]
Outputs: tests/fixtures/tokenizer/encode.jsonl  {"text", "ids", "nfc"}            one line per string
         tests/fixtures/tokenizer/flags.json    {"added_tokens": [...], "cases": [{"text", "ids"}]}: the Qwen3
                                                 tokenizer plus extra added tokens with lstrip / rstrip / single_word /
                                                 normalized flags (the test appends them to the shared tokenizer.json)
         tests/fixtures/tokenizer/corpus-digest.json  every document of <shared>/data/beir-scifact/corpus.jsonl
                                                 (title + "\n" + text) encoded: total tokens and an FNV-1a-64 digest
                                                 of the ids per block of 100 documents (see corpus_digest)
         tests/fixtures/tokenizer/chat.jsonl    {"name", "variant", "messages", "add_generation_prompt",
                                                 "enable_thinking" (absent = undefined), "text", "ids"}
"""
import argparse
import json
import pathlib
import random
import unicodedata

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]

HYBRID_GENERATION_PROMPT = """{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""
THINKING_GENERATION_PROMPT = """{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n<think>\\n' }}
{%- endif %}"""


def encode_strings():
    s = []
    # Latin, punctuation, contractions (the case-insensitive alternation), numbers.
    s += ["Hello, world!", "hello world", "  leading spaces", "trailing spaces   ", "a", "", " ", "  ", "\n", "\t",
          "I'm here, you're there, they've gone, we'll see, she'd know, it's John's.",
          "I'M HERE, YOU'RE THERE, THEY'VE GONE, WE'LL SEE, SHE'D KNOW, IT'S", "don't  'tis 's 'S 'ſ 'T ' s",
          "The year 2024 had 365 days; pi is 3.14159265358979 and e=2.718.", "1234567890", "12,345,678.90 USD",
          "$100 + €200 = ¥300?", "x^2 + y^2 = z^2", "version 1.2.3-rc.4+build.5",
          "Café naïve résumé coöperate façade jalapeño Ångström", "Straße Größe Übermaß",
          "ÀÁÂÃÄÅ àáâãäå ÈÉÊË ÌÍÎÏ ÒÓÔÕÖ ÙÚÛÜ Ý", "Dziękuję bardzo, proszę", "Ça va? Oui, très bien!",
          "¿Dónde está la biblioteca? ¡Allí!", "Œuvre œil æther Æsir", "ﬁnance ﬂow ﬀ", "ǅungla Ǆ ǆ"]
    # Other scripts.
    s += ["Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
          "你好，世界！今天天气很好。", "我们在2024年发布了新版本的模型。", "日本語のテキスト、カタカナとひらがな。",
          "東京都渋谷区", "한국어 문장입니다. 안녕하세요!", "สวัสดีครับ ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
          "مرحبا بالعالم! كيف حالك؟", "السلام عليكم ورحمة الله", "नमस्ते दुनिया! आप कैसे हैं?", "हिन्दी में लिखा गया वाक्य।",
          "Γειά σου Κόσμε! αβγδε ΑΒΓΔΕ", "שלום עולם", "Բարեւ աշխարհ", "გამარჯობა მსოფლიო", "ሰላም ልዑል",
          "வணக்கம் உலகம்", "ជំរាបសួរ", "Xin chào thế giới, tiếng Việt có dấu", "Merhaba dünya, İstanbul ıİiI",
          "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉", "𠀀𠀁𠀂 rare CJK ext B", "ᚠᛇᚻ᛫ᛒᛦᚦ runes", "Ⅻ ⅻ ① ② ③ ¼ ½ ¾ ²³",
          "١٢٣٤٥ ٦٧٨٩٠ Arabic-Indic digits", "०१२३४५६७८९ Devanagari digits", "一二三 〇 十万"]
    # Emoji: single, skin tones, ZWJ sequences, flags, keycaps, variation selectors.
    s += ["😀", "😀😃😄😁", "👍🏽 👍🏿", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder", "🏳️‍🌈 🏴‍☠️", "🇫🇷🇩🇪🇯🇵🇺🇸",
          "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland", "1️⃣ #️⃣ *️⃣", "❤️ ♥ ☺️ ✔️", "emoji in text 🚀 rocket 🌍 earth", "🤖🤖🤖🤖🤖🤖🤖🤖"]
    # Code.
    s += ["def f(x):\n    return x * 2\n", "int main() {\n\treturn 0;\n}\n", "for (int i = 0; i < n; ++i) a[i] += b[i];",
          "#include <vector>\nstd::vector<int> v{1, 2, 3};", "const x = {a: 1, 'b': [true, null]};",
          "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;", "<html><body><p class=\"x\">Hi</p></body></html>",
          "if x != y && z <= w || !q { panic!(\"oops\") }", "    if True:\n        pass\n\n\n    else:\n        pass",
          "$ ls -la /usr/local/bin | grep -E '^d' > out.txt 2>&1", "http://example.com/path?q=1&r=two#frag",
          "user@example.org", "a_b_c snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
          "\\begin{equation} E = mc^2 \\end{equation}", "```python\nprint('hi')\n```", "/* comment */ // line",
          "0x1F 0b1010 1e-9 1_000_000 .5 5.", "λx.x → ∀x∃y: x≠y ∧ y≥0 ⇒ ⊥"]
    # Whitespace runs, tabs, newlines, CR, unusual spaces (the \s-related branches of the split regex).
    s += ["a  b   c    d     e", "a\tb\t\tc", "line1\nline2\n\nline4\n\n\n", "crlf\r\nline\r\n\r\n", "\r\r\r",
          "   \n   \n", " \t \n \t ", "word \n", "word  \n\n  next", "\n\n\n\n\n\n\n\n", " " * 40, "\t" * 17,
          "x" + " " * 33 + "y", "a\u00a0b\u2003c\u3000d", "nbsp\u00a0\u00a0\u00a0end", "vt\u000bff\u000cend",
          "nel\u0085end", "ls\u2028ps\u2029end", "zwsp\u200bzwj\u200dzwnj\u200cend", "\ufeffBOM at start",
          "tab\t\n\tmixed  \t  ", "trailing newline\n", " ?!\n", "!!!\n\n\n", "...\r\n", "  ... ", "a ,b , c"]
    # Combining characters and un-normalised text (NFC changes these).
    s += ["e\u0301", "Cafe\u0301", "n\u0303o\u0308", "A\u030a", "\u1e9b\u0323", "Ka\u0300\u0301\u0302\u0303",
          "\u0041\u0308\u0304", "\u2126 ohm \u212b angstrom", "\u1100\u1161\u11a8 hangul jamo",
          "q\u0307\u0323", "\u0958 devanagari qa", "x\u0338y", "\u00c5\u212b\u0041\u030a",
          "combining only \u0301\u0302", "\u0301 leading mark"]
    # Special and added tokens, alone and inside text (matched before splitting).
    s += ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHello<|im_end|>\n",
          "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
          "<think>\nreasoning here\n</think>\n\nanswer", "text<think>inner</think>text", "<tool_call>\n{}\n</tool_call>",
          "<tool_response>ok</tool_response>", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
          "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|><|im_start|><|im_end|>", " <|im_end|> ",
          "<|im_end|>\n\n", "<|im_start", "im_start|>", "<|im_end|x", "<| im_end |>", "<<|im_end|>>",
          "<|IM_END|>", "a<|endoftext|>b<|endoftext|>c", "<think></think>", "</think>\n\n", "<|repo_name|>x<|file_sep|>"]
    # Long repeats (stress the merge loop and the cache).
    s += ["a" * 300, "ab" * 200, "aaaa bbbb " * 40, "=" * 120, "-" * 77, "ha" * 101, "😀" * 50, "中" * 120,
          "The quick brown fox jumps over the lazy dog. " * 12, "\n" * 64, "!?" * 60, "0" * 100, "1234" * 30,
          "_" * 65, "." * 99, "ab" + "c" * 500 + "d"]
    # Mixed-script sentences and odd punctuation.
    s += ["English 中文 русский العربية हिन्दी ไทย 😀 mixed", "«quotes» „Anführung“ ‘single’ “double”",
          "em—dash en–dash minus−sign", "ellipsis… bullet • middle·dot", "©®™ §¶ †‡ ‰ ′″", "100°C ±5% µm Ω",
          "(parenthetical) [bracket] {brace} <angle>", "1st 2nd 3rd 4th", "I.B.M. U.S.A. e.g. i.e. etc.",
          "Mr. Smith's dog's bone", "rock'n'roll", "''''", "'s", "'ll've", "l'été d'été", "it’s curly apostrophe’s"]

    # Real prose: the first passages of the shared BEIR SciFact corpus (deterministic), trimmed.
    corpus = shared_dir / "data/beir-scifact/corpus.jsonl"
    with open(corpus, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 40:
                break
            doc = json.loads(line)
            s.append((doc.get("title", "") + "\n" + doc.get("text", ""))[:600])

    # Random mixtures from a pool of characters that exercise every regex branch (seeded, so reproducible).
    rng = random.Random(5)
    pool = list("aAzZ09 \t\n\r'.,;:!?-_()[]{}<>/\\\"#$%&*+=~`^|@") + list("éüßøñçЖжλΩ中文字日本한글ไทยعربيहि😀👍🏽‍️") + [
        "\u0301", "\u00a0", "\u3000", "'s", "'LL", "<|im_end|>", "<think>", "123", "  ", "\r\n"]
    for _ in range(80):
        s.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    return s


def chat_cases():
    sys_msg = {"role": "system", "content": "You are a careful assistant. Cite evidence as [n]."}
    u1 = {"role": "user", "content": "What is the boiling point of water?"}
    a1_plain = {"role": "assistant", "content": "100 °C at sea level."}
    a1_think = {"role": "assistant", "content": "<think>\nThe user asks about water.\n</think>\n\n100 °C at sea level."}
    u2 = {"role": "user", "content": "And at 2000 m?"}
    a2_think = {"role": "assistant", "content": "<think>\nLower pressure.\n\n</think>\n\n\nAbout 93 °C."}
    cases = [
        ("user_only", [u1]),
        ("system_user", [sys_msg, u1]),
        ("two_turns_plain", [sys_msg, u1, a1_plain, u2]),
        ("two_turns_think_history", [sys_msg, u1, a1_think, u2]),
        ("ends_with_assistant_think", [sys_msg, u1, a1_think]),
        ("ends_with_assistant_plain", [u1, a1_plain]),
        ("three_turns", [sys_msg, u1, a1_think, u2, a2_think, {"role": "user", "content": "Thanks!"}]),
        ("assistant_after_last_user", [u1, a1_think, a2_think]),
        ("close_tag_only", [u1, {"role": "assistant", "content": "partial reasoning\n</think>\nfinal"}]),
        ("two_close_tags", [u1, {"role": "assistant", "content": "<think>a</think>b</think>\n\nc"}]),
        ("open_tag_only", [u1, {"role": "assistant", "content": "<think>\nunterminated"}]),
        ("empty_think", [u1, {"role": "assistant", "content": "<think>\n\n</think>\n\nanswer"}]),
        ("second_system", [sys_msg, u1, a1_plain, {"role": "system", "content": "Be brief."}, u2]),
        ("no_system_multi", [u1, a1_plain, u2, a2_think, {"role": "user", "content": "再见 👋"}]),
        ("unicode_content", [{"role": "system", "content": "Réponds en français."},
                             {"role": "user", "content": "Qu'est-ce que l'entropie ? e\u0301"}]),
        ("empty_contents", [{"role": "system", "content": ""}, {"role": "user", "content": ""}]),
        ("tool_response_user", [u1, a1_think, {"role": "user", "content": "<tool_response>42</tool_response>"},
                                a2_think]),
        ("tool_messages", [u1, {"role": "assistant", "content": "Let me check."}, {"role": "tool", "content": "r1"},
                           {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "<think>x</think>done"},
                           u2]),
        ("newlines_around", [{"role": "user", "content": "\n\nq\n\n"},
                             {"role": "assistant", "content": "\n<think>\n\nthought\n\n</think>\n\n\n\nans\n"}]),
        ("special_in_content", [{"role": "user", "content": "Say <|im_end|> literally"}]),
    ]
    return cases


# Extra added tokens exercising every flag of the added-vocabulary matcher (ids after Qwen3's last id, 151668).
FLAG_TOKENS = [
    {"content": "<mask>", "lstrip": True, "rstrip": False, "single_word": False, "normalized": False, "special": True},
    {"content": "[R]", "lstrip": False, "rstrip": True, "single_word": False, "normalized": False, "special": False},
    {"content": "zzboth", "lstrip": True, "rstrip": True, "single_word": False, "normalized": False, "special": False},
    {"content": "qcatq", "lstrip": False, "rstrip": False, "single_word": True, "normalized": False, "special": False},
    {"content": "qcatqlog", "lstrip": False, "rstrip": False, "single_word": True, "normalized": False,
     "special": False},
    {"content": "\u00e9t\u00e9", "lstrip": False, "rstrip": False, "single_word": False, "normalized": True,
     "special": False},
    {"content": "o\u0308l", "lstrip": False, "rstrip": False, "single_word": False, "normalized": True,
     "special": False},
    {"content": "n\u0303", "lstrip": False, "rstrip": False, "single_word": False, "normalized": False,
     "special": False},
]
FLAG_TEXTS = [
    "a <mask> b", "a   <mask>b", "<mask>", "x<mask>", "\t\n <mask>", "<mask><mask>", " <mask> <mask> ", "a\u3000<mask>",
    "[R]   next", "[R]\n\nz", "a [R] b", "[R][R]  ", "[R]", "zzboth", "zzbother", " zzboth ", "x  zzboth  y",
    "a\tzzboth\tb", "a\u00a0zzboth\u2003b", "qcatq", "a qcatq b", "qcatqs", "conqcatq", "_qcatq", "qcatq_", "qcatq.",
    "(qcatq)", "qcatqé", "qcatq1", "1qcatq", "qcatqlog", "qcatqlogs", "a qcatqlog", "qcatqlo", "été",
    "e\u0301te\u0301", "l'e\u0301te\u0301 est chaud", "öl", "o\u0308l", "Ö", "n\u0303", "ñ", "man\u0303ana",
    "<|im_end|> <mask> qcatq [R] zzboth", "<mask>qcatq", "qcatq<mask>", "été<|im_end|>été",
]


def fnv1a64(ids, h=0xCBF29CE484222325):
    """FNV-1a over the ids as little-endian uint32 bytes; the C++ test computes the same."""
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def corpus_digest(tok, corpus_path, block=100):
    docs = []
    with open(corpus_path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append(d.get("title", "") + "\n" + d.get("text", ""))
    encodings = tok.encode_batch(docs, add_special_tokens=False)
    blocks, total = [], 0
    for start in range(0, len(docs), block):
        h = 0xCBF29CE484222325
        for e in encodings[start:start + block]:
            h = fnv1a64(e.ids + [0xFFFFFFFF], h)  # a separator id marks each document's end
            total += len(e.ids)
        blocks.append(f"{h:016x}")
    return {"source": "data/beir-scifact/corpus.jsonl", "documents": len(docs), "block": block, "tokens": total,
            "fnv1a64": blocks}


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def main():
    global shared_dir
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/tokenizer"))
    args = ap.parse_args()
    shared_dir = pathlib.Path(args.shared)
    tok_dir = shared_dir / "models/qwen3-tokenizer"
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    strings = encode_strings()
    with open(out / "encode.jsonl", "w", encoding="utf-8") as f:
        for text in strings:
            ids = tok.encode(text, add_special_tokens=False).ids
            nfc = unicodedata.normalize("NFC", text)
            assert tok.decode(ids, skip_special_tokens=False) == nfc, repr(text)
            f.write(json.dumps({"text": text, "ids": ids, "nfc": nfc}, ensure_ascii=False) + "\n")

    tok_json = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    next_id = max(t["id"] for t in tok_json["added_tokens"]) + 1
    flag_tokens = [dict(t, id=next_id + i) for i, t in enumerate(FLAG_TOKENS)]
    for t in flag_tokens:  # new contents only: `tokenizers` gives a content already in the vocabulary its vocab id
        assert tok.token_to_id(t["content"]) is None, t
    tok_json["added_tokens"] += flag_tokens
    flag_tok = Tokenizer.from_str(json.dumps(tok_json))
    for t in flag_tokens:
        assert flag_tok.id_to_token(t["id"]) is not None, t
    flag_cases = [{"text": t, "ids": flag_tok.encode(t, add_special_tokens=False).ids} for t in FLAG_TEXTS]
    with open(out / "flags.json", "w", encoding="utf-8") as f:
        json.dump({"added_tokens": flag_tokens, "cases": flag_cases}, f, ensure_ascii=False, indent=0)
        f.write("\n")

    digest = corpus_digest(tok, shared_dir / "data/beir-scifact/corpus.jsonl")
    with open(out / "corpus-digest.json", "w", encoding="utf-8") as f:
        json.dump(digest, f, indent=0)
        f.write("\n")

    hybrid = config["chat_template"]
    assert hybrid.count(HYBRID_GENERATION_PROMPT) == 1, "unexpected chat template: generation-prompt block not found"
    thinking = hybrid.replace(HYBRID_GENERATION_PROMPT, THINKING_GENERATION_PROMPT)
    env = make_env()
    templates = {"hybrid": env.from_string(hybrid), "thinking": env.from_string(thinking)}
    special = {"eos_token": config.get("eos_token"), "pad_token": config.get("pad_token")}
    n_chat = 0
    with open(out / "chat.jsonl", "w", encoding="utf-8") as f:
        for name, messages in chat_cases():
            for variant in ("thinking", "hybrid"):
                for add_gen in (True, False):
                    thinking_flags = [None] if variant == "thinking" else [None, True, False]
                    for enable_thinking in thinking_flags:
                        kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
                        text = templates[variant].render(messages=messages, tools=None, documents=None,
                                                         add_generation_prompt=add_gen, **special, **kwargs)
                        row = {"name": name, "variant": variant, "messages": messages, "add_generation_prompt": add_gen}
                        if enable_thinking is not None:
                            row["enable_thinking"] = enable_thinking
                        row["text"] = text
                        row["ids"] = tok.encode(text, add_special_tokens=False).ids
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                        n_chat += 1
    print(f"wrote {len(strings)} encode cases and {n_chat} chat cases to {out}")


if __name__ == "__main__":
    main()
