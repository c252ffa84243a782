#!/usr/bin/env python3
"""Writes corpus.jsonl, the strings of the tokenizer parity test.

Deterministic: Python 3.11 (unicodedata 14.0, which decides which random
code points are assigned characters) always writes the same file. Each line is
{"text": "..."} (encoded, then decoded) or {"bytes": "hex"} (a byte sequence,
often ill-formed UTF-8, that the reference turns into byte tokens and
decodes). Run: python3 test/runtime/tokenizer/make_corpus.py
"""

import json
import pathlib
import random
import unicodedata

rng = random.Random(20251126)

SENTENCES = {
    "en": ["The quick brown fox jumps over the lazy dog.",
           "It's 5 o'clock somewhere, isn't it? We'll see; they'd know.",
           "Mixture-of-Experts models route each token to a few experts."],
    "de": ["Größenwahn ist keine Straße für Fußgänger.",
           "Über den Wolken muss die Freiheit wohl grenzenlos sein."],
    "fr": ["L'été dernier, nous sommes allés à Montréal — c'était génial !",
           "Où est la bibliothèque ? « Là-bas », répondit-il."],
    "es": ["¿Dónde está el baño? ¡Qué rápido corre el niño!",
           "El pingüino comió ñoquis en Año Nuevo."],
    "pt": ["Não há nada como a saudade do coração.", "Ação, emoção e razão."],
    "it": ["Perché l'università è così costosa?", "Più piano, per favore."],
    "pl": ["Zażółć gęślą jaźń.", "Chrząszcz brzmi w trzcinie."],
    "tr": ["Iğdır'da ılık bir gün; İstanbul'a gidiyoruz.",
           "Şişli'de çay içtik."],
    "vi": ["Tiếng Việt có dấu: Hà Nội, Thành phố Hồ Chí Minh.",
           "Tôi yêu lập trình."],
    "ru": ["Съешь же ещё этих мягких французских булок, да выпей чаю.",
           "Москва — столица России."],
    "uk": ["Ґанок і їжак: українська мова має літери є, ї, ґ."],
    "el": ["Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
           "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο."],
    "ar": ["مرحبا بالعالم! كيف حالك اليوم؟",
           "اللغة العربية جميلة جداً، وتُكتب من اليمين إلى اليسار."],
    "he": ["שלום עולם, מה שלומך?", "עברית נכתבת מימין לשמאל."],
    "fa": ["سلام دنیا، امروز هوا خوب است."],
    "hi": ["नमस्ते दुनिया! आप कैसे हैं?", "हिन्दी देवनागरी लिपि में लिखी जाती है।"],
    "bn": ["আমি বাংলায় গান গাই।"],
    "ta": ["வணக்கம் உலகம்! தமிழ் ஒரு பழமையான மொழி."],
    "th": ["สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
           "กรุงเทพมหานครอมรรัตนโกสินทร์"],
    "zh": ["你好，世界！今天天气很好。", "混合专家模型把每个词元路由到少数专家。",
           "繁體中文與简体中文並存。"],
    "ja": ["こんにちは世界！今日はいい天気ですね。", "カタカナとひらがなと漢字を混ぜて書きます。",
           "ｶﾀｶﾅ（半角）も使います。"],
    "ko": ["안녕하세요 세계! 오늘 날씨가 좋네요.", "한국어는 한글로 씁니다."],
    "ka": ["გამარჯობა მსოფლიო!"],
    "hy": ["Բարեւ աշխարհ։"],
    "am": ["ሰላም ለዓለም።"],
    "my": ["မင်္ဂလာပါ ကမ္ဘာ"],
    "km": ["សួស្តី​ពិភពលោក"],
    "mixed": ["English, 中文, العربية and русский in one line.",
              "Tokyo (東京) → Seoul (서울) → Bangkok (กรุงเทพฯ)."],
}

CODE = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v[0]; }\n",
    "fn main() {\n    let s: String = \"héllo\".to_owned();\n    println!(\"{s:?}\");\n}\n",
    "const add = (a, b) => a + b; // arrow function\nconsole.log(add(2, 3));\n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;\n",
    "<div class=\"card\"><p>Hello &amp; welcome</p></div>\n",
    "{\"key\": [1, 2.5, -3e10], \"nested\": {\"ok\": true, \"v\": null}}\n",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "\\begin{equation} E = mc^2 \\quad \\int_0^\\infty e^{-x^2}\\,dx \\end{equation}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "public static void main(String[] args) { System.out.println(\"x\"); }\n",
    "    if x:\n        pass\n    else:\n        raise ValueError(f\"bad {x!r}\")\n",
    "lambda x: x**2 if x > 0 else -x  # comment with émoji 🚀\n",
    "matrix = [[1, 0], [0, 1]]\r\nprint(matrix)\r\n",
    "__init__ __main__ self._private_var __dunder__\n",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b<<=1;c>>=2;d&=e|f^g~h\n",
    "https://example.com/path?query=1&other=two#frag user@example.org\n",
    "    \t  mixed indentation\n\t\t  with tabs\n",
    "/* C comment */ // line comment\n/** Javadoc @param x */\n",
]

EMOJI = ["😀", "🚀", "👍", "👍🏽", "👍🏿", "❤️", "🇺🇸", "🇯🇵", "🏳️‍🌈", "👨‍👩‍👧‍👦",
         "👩🏽‍💻", "🧑‍🚀", "1️⃣", "#️⃣", "🤷‍♀️", "🙋🏻‍♂️", "🫠", "🥹", "☕", "✅",
         "⚠️", "🔥", "💯", "🎉", "🐍", "🦀", "👁️‍🗨️", "🧔🏾‍♀️", "💁🏼", "🤌",
         "👨🏻‍🤝‍👨🏿", "🏴‍☠️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️", "™", "↩️", "🈶", "🀄", "🃏", "🎴"]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>",
            "<unk>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
            "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
            "<tool_call>", "<|fim_prefix|>", "<|start|>", "<|end|>",
            "<|channel|>", "<|message|>", "<|return|>", "<|constrain|>",
            "<|startoftext|>", "<｜tool▁calls▁begin｜>", "<｜fim▁hole｜>"]
NEAR_MISSES = ["<|im_start", "im_start|>", "<|IM_START|>", "< s>", "<s", "s>",
               "<<s>>", "</s", "<|endoftext", "<｜begin▁of▁sentence",
               "<|end|", "<think", "<|reserved_200000|>", "<|channel|"]

SPACES = [" ", "  ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u3000", "\u2028",
          "\u0085", "\u200b", "\ufeff", "\u2009", "\r", "\x0b", "\x0c"]


def all_fragments():
    return [s for group in SENTENCES.values() for s in group]


def assigned(cp):
    c = chr(cp)
    return unicodedata.category(c) not in ("Cn", "Cs")


BLOCKS = [(0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0xFF),
          (0x100, 0x24F), (0x250, 0x2AF), (0x300, 0x36F), (0x370, 0x3FF),
          (0x400, 0x4FF), (0x530, 0x58F), (0x590, 0x5FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0x980, 0x9FF), (0xE00, 0xE7F), (0x10A0, 0x10FF),
          (0x1100, 0x11FF), (0xAC00, 0xD7A3), (0x4E00, 0x9FFF),
          (0x3040, 0x309F), (0x30A0, 0x30FF), (0xFF00, 0xFFEF),
          (0x2200, 0x22FF), (0x2190, 0x21FF), (0x2500, 0x257F),
          (0x2800, 0x28FF), (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F),
          (0xE000, 0xE0FF), (0x2000, 0x206F), (0x20000, 0x2A6DF),
          (0x1D400, 0x1D7FF), (0xFE00, 0xFE0F), (0x2460, 0x24FF)]


def random_unicode(length):
    out = []
    while len(out) < length:
        lo, hi = rng.choice(BLOCKS)
        cp = rng.randint(lo, hi)
        if assigned(cp):
            out.append(chr(cp))
    return "".join(out)


def random_number():
    kind = rng.randrange(12)
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))
    if kind == 0:
        return digits(rng.randint(1, 60))
    if kind == 1:
        return f"{digits(rng.randint(1, 6))}.{digits(rng.randint(1, 8))}"
    if kind == 2:
        return f"{rng.randint(0, 10**9):,}"
    if kind == 3:
        return f"-{digits(3)}e{rng.randint(-30, 30)}"
    if kind == 4:
        return f"+1 ({digits(3)}) {digits(3)}-{digits(4)}"
    if kind == 5:
        return f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 6:
        return f"v{rng.randint(0, 20)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}"
    if kind == 7:
        return f"0x{rng.getrandbits(32):08X}"
    if kind == 8:
        return "".join(chr(0x660 + int(d)) for d in digits(rng.randint(1, 10)))
    if kind == 9:
        return "".join(chr(0x966 + int(d)) for d in digits(rng.randint(1, 10)))
    if kind == 10:
        return "".join(chr(0xFF10 + int(d)) for d in digits(rng.randint(1, 10)))
    return rng.choice(["²³¹", "½ ¼ ¾", "Ⅻ Ⅳ ⅷ", "①②③", "3.14159", "1e-9",
                       "100%", "$1,000.00", "€9,99", "12:30:45"])


def texts():
    out = []
    fragments = all_fragments()
    out += fragments
    out += CODE
    out += ["", " ", "  ", "\n", "\t", "\r\n", "a", "A", "0", "é", "中", "😀",
            "\u2581", "\u2581\u2581\u2581", "▁Hello▁world", "Ġhello", "ĊĠĠ",
            "<0x41>", "<0xZZ>", "<0x0A><0x0A>", "\ufffd", "\ufffd\ufffd x",
            "\u0301leading combining mark", "\x00", "a\x00b", "\x7f\x80\x9f",
            "'s", "'S", "'ll", "'ſ", "'K", "ſ", "K", "ǅ", "ﬁ", "ß"]
    # Mixed fragments.
    for _ in range(600):
        parts = rng.sample(fragments, rng.randint(1, 4))
        seps = [rng.choice(SPACES + ["", " - ", "。", ", "]) for _ in parts]
        s = "".join(p + q for p, q in zip(parts, seps))
        if rng.random() < 0.2:
            s = s.upper()
        elif rng.random() < 0.2:
            s = s.lower()
        out.append(s)
    # Code variants: re-indented, CRLF, concatenated.
    for _ in range(200):
        s = rng.choice(CODE)
        choice = rng.randrange(4)
        if choice == 0:
            s = s.replace("    ", "\t")
        elif choice == 1:
            s = s.replace("\n", "\r\n")
        elif choice == 2:
            s = s + rng.choice(CODE)
        else:
            s = " " * rng.randint(1, 16) + s
        out.append(s)
    # Emoji in text.
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.5:
                parts.append(rng.choice(EMOJI))
            elif r < 0.8:
                parts.append(rng.choice(fragments)[:rng.randint(1, 20)])
            else:
                parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    # Whitespace runs.
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:
                parts.append(rng.choice(SPACES) * rng.randint(1, 40))
            else:
                parts.append(rng.choice(["word", "x", "中文", "١٢", "é", "!?", "fn()"]))
        out.append("".join(parts))
    out += [" " * n for n in (2, 3, 7, 16, 31, 64, 100, 257, 500)]
    out += ["\t" * 20, "\n" * 20, "\r\n" * 12, " \n \n \t ", "a" + " " * 300 + "b"]
    # Numbers.
    for _ in range(200):
        parts = [random_number() for _ in range(rng.randint(1, 4))]
        out.append(rng.choice([" ", "", ", ", "\n", "x"]).join(parts))
    # Special tokens embedded in text.
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.6:
                parts.append(rng.choice(NEAR_MISSES))
            elif r < 0.85:
                parts.append(rng.choice(fragments)[:rng.randint(0, 30)])
            else:
                parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    # Contractions and case folding corner cases.
    words = ["I", "you", "he", "we", "they", "it", "DON", "can", "Won"]
    suffixes = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE",
                "'Ve", "'M", "'LL", "'D", "’s", "'ſ", "'x"]
    for _ in range(100):
        out.append(" ".join(rng.choice(words) + rng.choice(suffixes)
                            for _ in range(rng.randint(1, 6))))
    # Random code points.
    for _ in range(400):
        out.append(random_unicode(rng.randint(1, 40)))
    # Normalization-sensitive text.
    nfc_cases = ["e\u0301", "A\u030a", "\u1100\u1161\u11a8", "\u2126", "\u212b",
                 "o\u0308\u0304", "\u0041\u0301\u0327", "ﬁ", "①", "ｶ\u3099",
                 "\u00c5", "\u0958", "\u1e9b\u0323", "q\u0307\u0323"]
    for _ in range(100):
        out.append("".join(rng.choice(nfc_cases + [" ", "x", "é"])
                           for _ in range(rng.randint(1, 8))))
    # Long texts.
    for _ in range(10):
        pieces = [rng.choice(fragments + CODE + EMOJI + SPACES)
                  for _ in range(rng.randint(60, 200))]
        out.append(" ".join(pieces))
    return out


def byte_sequences():
    curated = ["80", "bf", "c0af", "c1bf", "e080af", "eda080", "edbfbf",
               "f4908080", "f5", "ff", "fe", "c2", "e4b8", "f09f98", "e4b8ad",
               "f09f9880", "41e4b842", "e4b8e4b8ad", "c3a9c3", "f0908080",
               "ef bb bf".replace(" ", ""), "00", "7f", "c280", "dfbf",
               "e0a080", "efbfbf", "f48fbfbf", "8080808080", "e4b8ad80"]
    out = list(curated)
    for _ in range(170):
        n = rng.randint(1, 24)
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(n))
        else:
            # Valid text with a few bytes cut out or flipped.
            text = rng.choice(all_fragments()).encode()
            data = bytearray(text[: rng.randint(1, len(text))])
            for _ in range(rng.randint(1, 3)):
                if data:
                    i = rng.randrange(len(data))
                    data[i] ^= rng.choice([0x80, 0x40, 0xFF])
            data = bytes(data)
        out.append(data.hex())
    return out


def main():
    # Random code points are kept only if assigned in this Unicode version,
    # the one of PCRE2 10.42's tables: newer characters may split differently
    # in the C++ tokenizer than in a reference built on newer Unicode data.
    assert unicodedata.unidata_version == "14.0.0", \
        "run with Python 3.11 (Unicode 14.0), as on Debian 12"
    path = pathlib.Path(__file__).with_name("corpus.jsonl")
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts()]
    lines += [json.dumps({"bytes": b}) for b in byte_sequences()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{path}: {len(lines)} cases, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
