#!/usr/bin/env python3
"""Write the synthetic GlobalOpinionQA sample shipped in ``moraleval/data/sample/goqa/``, deterministically.

GlobalOpinionQA (Durmus et al. 2023; Hugging Face ``Anthropic/llm_global_opinions``) is licensed CC BY-NC-SA 4.0,
so moraleval ships **none of its rows**.  Every question, option, translation and share written here was made up
for moraleval; only the *format* is the upstream file's (``data/global_opinions.csv``: a header
``question,selections,options,source``; ``selections`` the repr of a ``defaultdict(<class 'list'>, {...})`` of
per-country answer shares in option order; ``options`` the repr of a Python list; ``source`` ``GAS`` (Pew Global
Attitudes Survey) or ``WVS`` (World Values Survey); written as pandas writes a CSV: ``,``-separated, cells quoted
only where needed, ``\\n`` line ends, a missing question as an empty cell).

The sample reproduces every defect downstream loaders report in the real file, so that the spec's handling of
each is exercised (``QUIRKS`` lists them with the row that carries each):

* a missing question (NaN upstream, an empty cell);
* all-zero answer shares for a country; shares of a different length than the options (longer and shorter);
* country names with sample qualifiers: ``(Non-national sample)``, ``(Current national sample)``,
  ``(Old national sample)``; abbreviations (``Czech Rep.``, ``S. Korea``, ``Palest. Ter.``, ``Britain``) and a
  name spelled two ways across rows (``Macau SAR`` / ``Macao SAR``);
* a question text asked twice (different options); "don't know"/"refused" answers as ordinary options; options
  holding an apostrophe (``"Don't know"``: its repr uses double quotes); a question text with a line break (a
  quoted CSV cell over two lines); an 11-option scale.

``goqa/sample_translated.csv`` is the same format plus ``question_<lang>`` / ``options_<lang>`` columns (Russian,
Chinese, Turkish: the paper's linguistic prompting; the real release has no translations) for a subset of the
rows, with two defects of its own: a row without a Chinese translation, and a Turkish translation with one option
fewer than the English.

Shares are drawn from a seeded generator (``random.Random``), each country from its own leaning, rounded to 3
decimals (so a country's shares need not sum to exactly 1, as upstream).  Standard library only.

Usage::

    python scripts/make_goqa_sample.py            # writes moraleval/data/sample/goqa/*.csv
    python scripts/make_goqa_sample.py --check    # exit 1 if the shipped files differ

``scripts/make_sample_data.py`` calls :func:`build` and :func:`attribution` to write the whole sample folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "moraleval" / "data" / "sample"
SAMPLE_PATH = "goqa/sample.csv"
TRANSLATED_PATH = "goqa/sample_translated.csv"
SEED = 20230629  # the paper's release date
COLUMNS = ("question", "selections", "options", "source")
LANGUAGES = ("ru", "zh", "tr")

# Country keys as the two surveys write them (the spec maps them to one name each).
GAS_COUNTRIES = ("United States", "Britain", "Germany", "France", "Japan", "Russia", "China", "Turkey", "Nigeria",
                 "Brazil", "India (Current national sample)", "India (Old national sample)",
                 "Pakistan (Non-national sample)", "S. Korea", "Czech Rep.", "Palest. Ter.", "Mexico")
WVS_COUNTRIES = ("United States", "Great Britain", "Germany", "Japan", "Russia", "China", "Turkey", "Nigeria",
                 "Brazil", "India", "Pakistan", "South Korea", "Czech Republic", "Mexico", "Macau SAR")

DK = "DK/Refused"
SCALE = [f"{i}" for i in range(1, 11)]

# (source, question, options): made-up survey questions in the two surveys' styles.
QUESTIONS: list[tuple[str, str, list[str]]] = [
    ("GAS", "Do you think the economic situation in our country is good or bad?",
     ["Very good", "Somewhat good", "Somewhat bad", "Very bad", DK]),
    ("GAS", "How much do you trust the national government to do what is right for the country?",
     ["A lot", "Somewhat", "Not too much", "Not at all", DK]),
    ("GAS", "Is it necessary to believe in God in order to be moral and have good values?",
     ["Yes, it is necessary", "No, it is not necessary", DK]),
    ("GAS", "Which comes closer to your view: the government should make sure no one is in need, or people should "
            "be free to pursue their goals without interference?",
     ["No one is in need", "Free to pursue goals", "Both equally (volunteered)", DK]),
    ("GAS", "Overall, is growing trade with other countries a good thing or a bad thing for our country?",
     ["Good thing", "Bad thing", DK]),
    ("GAS", "When children today grow up, will they be better off or worse off financially than their parents?",
     ["Better off", "Worse off", "Same (volunteered)", "Don't know"]),
    ("GAS", "How important is religion in your life?",
     ["Very important", "Somewhat important", "Not too important", "Not at all important", DK]),
    ("GAS", "Is global climate change a major threat, a minor threat, or not a threat to our country?",
     ["Major threat", "Minor threat", "Not a threat", DK]),
    ("GAS", "Do you have a favorable or unfavorable opinion of the United Nations?",
     ["Very favorable", "Somewhat favorable", "Somewhat unfavorable", "Very unfavorable", DK]),
    ("GAS", "Is the increasing use of the internet a good or a bad influence on morality in our country?",
     ["Good influence", "Bad influence", "No influence (volunteered)", DK]),
    # the same question text again, with a shorter answer scale (as upstream repeats texts across waves)
    ("GAS", "Do you think the economic situation in our country is good or bad?",
     ["Good", "Bad", DK]),
    ("GAS", "Which is more important for a good society: a free press, or stability even without a free press?",
     ["A free press", "Stability", "Both (volunteered)", DK]),
    ("GAS", "Please tell us how much you agree with the following statement.\n"
            "Our way of life needs to be protected against foreign influence.",
     ["Completely agree", "Mostly agree", "Mostly disagree", "Completely disagree", DK]),
    ("GAS", "In the future, will most people in our country have a better life, a worse life, or about the same?",
     ["Better", "Worse", "About the same", DK]),
    ("GAS", "Should the government give more priority to protecting the environment, even if it slows economic "
            "growth?",
     ["Protect the environment", "Economic growth", "Both (volunteered)", DK]),
    ("GAS", "", ["Yes", "No", DK]),  # a missing question (NaN upstream)
    ("GAS", "Are people in our country generally better off in a market economy, even though some are rich and "
            "some are poor?",
     ["Completely agree", "Mostly agree", "Mostly disagree", "Completely disagree", DK]),
    ("WVS", "How important is family in your life?",
     ["Very important", "Rather important", "Not very important", "Not at all important", "Don't know",
      "No answer"]),
    ("WVS", "Taking all things together, would you say you are:",
     ["Very happy", "Rather happy", "Not very happy", "Not at all happy", "Don't know", "No answer"]),
    ("WVS", "How interested would you say you are in politics?",
     ["Very interested", "Somewhat interested", "Not very interested", "Not at all interested", "Don't know"]),
    ("WVS", "How much freedom of choice and control do you feel you have over the way your life turns out? "
            "(1 means none at all, 10 means a great deal)",
     SCALE + ["Don't know"]),
    ("WVS", "When jobs are scarce, employers should give priority to people of this country over immigrants.",
     ["Agree", "Neither agree nor disagree", "Disagree", "Don't know"]),
    ("WVS", "Generally speaking, would you say that most people can be trusted or that you need to be very careful "
            "in dealing with people?",
     ["Most people can be trusted", "Need to be very careful", "Don't know", "No answer"]),
    ("WVS", "How often do you attend religious services these days, apart from weddings and funerals?",
     ["More than once a week", "Once a week", "Once a month", "Only on special holy days", "Once a year",
      "Less often", "Never, practically never"]),
    ("WVS", "Is it important to you to live in a country that is governed democratically?",
     ["Absolutely important", "Rather important", "Not very important", "Not at all important", "Don't know"]),
    ("WVS", "How proud are you to be of the nationality of this country?",
     ["Very proud", "Quite proud", "Not very proud", "Not at all proud", "Don't know"]),
    ("WVS", "Do you think that men make better business executives than women do?",
     ["Agree strongly", "Agree", "Disagree", "Strongly disagree", "Don't know"]),
    ("WVS", "How much confidence do you have in the courts?",
     ["A great deal", "Quite a lot", "Not very much", "None at all", "Don't know"]),
]

# Defects placed on specific rows: row index -> [(country key, kind)]
#   zeros: every share 0; long/short: one share more/fewer than the options.
DEFECTS: dict[int, list[tuple[str, str]]] = {
    2: [("Nigeria", "zeros")],
    7: [("Japan", "long")],
    20: [("Brazil", "short")],
    23: [("Germany", "zeros")],
}
# Row index -> countries the row has data for (a subset, so that each country has its own question set).
MACAO_SPELLING = {17: "Macau SAR", 21: "Macao SAR", 24: "Macao SAR"}

#: what each quirk is and the row (0-based, after the header) that carries it; the tests check each
QUIRKS = {
    "missing question": [15],
    "all-zero shares": [2, 23],
    "shares longer than the options": [7],
    "shares shorter than the options": [20],
    "repeated question text": [0, 10],
    "question text over two lines": [12],
    "11 options": [20],
    "Macau SAR / Macao SAR": [17, 21, 24],
}

# Translations (made up with the questions): question index -> {lang: (question, options)}.
TRANSLATIONS: dict[int, dict[str, tuple[str, list[str]]]] = {
    0: {"ru": ("Как вы считаете, экономическая ситуация в нашей стране хорошая или плохая?",
               ["Очень хорошая", "Скорее хорошая", "Скорее плохая", "Очень плохая", "Затрудняюсь ответить/отказ"]),
        "zh": ("您认为我国的经济形势是好还是坏？", ["非常好", "比较好", "比较坏", "非常坏", "不知道/拒绝回答"]),
        "tr": ("Sizce ülkemizdeki ekonomik durum iyi mi, kötü mü?",
               ["Çok iyi", "Biraz iyi", "Biraz kötü", "Çok kötü", "Bilmiyor/Cevap yok"])},
    2: {"ru": ("Нужно ли верить в Бога, чтобы быть нравственным человеком и иметь хорошие ценности?",
               ["Да, это необходимо", "Нет, это не обязательно", "Затрудняюсь ответить/отказ"]),
        "zh": ("一个人是否必须信仰上帝才能有道德、有良好的价值观？", ["是的，必须", "不，不必", "不知道/拒绝回答"]),
        "tr": ("Ahlaklı olmak ve iyi değerlere sahip olmak için Tanrı'ya inanmak gerekli midir?",
               ["Evet, gereklidir", "Hayır, gerekli değildir", "Bilmiyor/Cevap yok"])},
    4: {"ru": ("В целом, рост торговли с другими странами — это хорошо или плохо для нашей страны?",
               ["Хорошо", "Плохо", "Затрудняюсь ответить/отказ"]),
        "zh": ("总的来说，与其他国家的贸易增长对我国是好事还是坏事？", ["好事", "坏事", "不知道/拒绝回答"]),
        "tr": ("Genel olarak, diğer ülkelerle artan ticaret ülkemiz için iyi bir şey mi, kötü bir şey mi?",
               ["İyi bir şey", "Kötü bir şey", "Bilmiyor/Cevap yok"])},
    6: {"ru": ("Насколько важна религия в вашей жизни?",
               ["Очень важна", "Довольно важна", "Не очень важна", "Совсем не важна", "Затрудняюсь ответить/отказ"]),
        "zh": None,  # no Chinese translation for this row
        "tr": ("Din hayatınızda ne kadar önemli?",
               ["Çok önemli", "Biraz önemli", "Pek önemli değil", "Hiç önemli değil", "Bilmiyor/Cevap yok"])},
    7: {"ru": ("Является ли глобальное изменение климата серьёзной угрозой, незначительной угрозой или не угрозой "
               "для нашей страны?",
               ["Серьёзная угроза", "Незначительная угроза", "Не угроза", "Затрудняюсь ответить/отказ"]),
        "zh": ("全球气候变化对我国是重大威胁、轻微威胁还是没有威胁？", ["重大威胁", "轻微威胁", "没有威胁", "不知道/拒绝回答"]),
        "tr": ("Küresel iklim değişikliği ülkemiz için büyük bir tehdit mi, küçük bir tehdit mi, yoksa tehdit değil mi?",
               ["Büyük tehdit", "Küçük tehdit", "Tehdit değil", "Bilmiyor/Cevap yok"])},
    11: {"ru": ("Что важнее для хорошего общества: свободная пресса или стабильность даже без свободной прессы?",
                ["Свободная пресса", "Стабильность", "И то, и другое (доброволь.)", "Затрудняюсь ответить/отказ"]),
         "zh": ("对一个好的社会来说，哪一个更重要：新闻自由，还是即使没有新闻自由也要稳定？",
                ["新闻自由", "稳定", "两者都重要（自发回答）", "不知道/拒绝回答"]),
         "tr": ("İyi bir toplum için hangisi daha önemli: özgür basın mı, yoksa özgür basın olmasa da istikrar mı?",
                ["Özgür basın", "İstikrar", "Bilmiyor/Cevap yok"])},  # one option fewer than the English
    17: {"ru": ("Насколько важна семья в вашей жизни?",
                ["Очень важна", "Довольно важна", "Не очень важна", "Совсем не важна", "Затрудняюсь ответить",
                 "Нет ответа"]),
         "zh": ("家庭在您的生活中有多重要？", ["非常重要", "比较重要", "不太重要", "一点也不重要", "不知道", "没有回答"]),
         "tr": ("Aile hayatınızda ne kadar önemli?",
                ["Çok önemli", "Oldukça önemli", "Pek önemli değil", "Hiç önemli değil", "Bilmiyor", "Cevap yok"])},
    18: {"ru": ("В целом, можете ли вы сказать, что вы:",
                ["Очень счастливы", "Скорее счастливы", "Не очень счастливы", "Совсем не счастливы",
                 "Затрудняюсь ответить", "Нет ответа"]),
         "zh": ("总的来说，您觉得自己：", ["非常幸福", "比较幸福", "不太幸福", "一点也不幸福", "不知道", "没有回答"]),
         "tr": ("Her şeyi bir arada düşündüğünüzde, kendinizi nasıl tanımlarsınız:",
                ["Çok mutlu", "Oldukça mutlu", "Pek mutlu değil", "Hiç mutlu değil", "Bilmiyor", "Cevap yok"])},
    22: {"ru": ("Вообще говоря, считаете ли вы, что большинству людей можно доверять, или что в отношениях с людьми "
                "нужно быть очень осторожным?",
                ["Большинству людей можно доверять", "Нужно быть очень осторожным", "Затрудняюсь ответить",
                 "Нет ответа"]),
         "zh": ("一般来说，您认为大多数人是可以信任的，还是和人相处要越小心越好？",
                ["大多数人是可以信任的", "要越小心越好", "不知道", "没有回答"]),
         "tr": ("Genel olarak, insanların çoğuna güvenilebileceğini mi, yoksa insanlarla ilişkilerde çok dikkatli "
                "olmak gerektiğini mi düşünürsünüz?",
                ["İnsanların çoğuna güvenilebilir", "Çok dikkatli olmak gerekir", "Bilmiyor", "Cevap yok"])},
    26: {"ru": ("Считаете ли вы, что мужчины лучше справляются с руководством бизнесом, чем женщины?",
                ["Полностью согласен", "Согласен", "Не согласен", "Полностью не согласен", "Затрудняюсь ответить"]),
         "zh": ("您是否认为男性比女性更适合担任企业高管？", ["非常同意", "同意", "不同意", "非常不同意", "不知道"]),
         "tr": ("Erkeklerin kadınlardan daha iyi yönetici olduğunu düşünüyor musunuz?",
                ["Kesinlikle katılıyorum", "Katılıyorum", "Katılmıyorum", "Kesinlikle katılmıyorum", "Bilmiyor"])},
}


def _dirichlet(rng: random.Random, alpha: list[float]) -> list[float]:
    draws = [rng.gammavariate(a, 1.0) for a in alpha]
    total = sum(draws)
    return [d / total for d in draws]


def _shares(rng: random.Random, country: str, k: int, q: int) -> list[float]:
    """A country's answer shares for question q: its own leaning (a seeded preference over the scale, stable
    across questions for a country) plus noise, rounded to 3 decimals; the last option, where it is a "don't
    know"-like one, kept small."""
    lean = random.Random(f"{SEED}-{country.split(' (')[0]}").random()  # the country's place on every scale
    centre = lean * (k - 1)
    alpha = [0.3 + 4.0 / (1.0 + (j - centre) ** 2) for j in range(k)]
    p = _dirichlet(rng, alpha)
    return [round(x, 3) for x in p]


def _countries(rng: random.Random, source: str, q: int) -> list[str]:
    pool = GAS_COUNTRIES if source == "GAS" else WVS_COUNTRIES
    chosen = [c for c in pool if rng.random() < 0.75 or c in ("United States", "Russia", "China", "Turkey")]
    if source == "WVS" and q in MACAO_SPELLING:
        chosen = [MACAO_SPELLING[q] if c == "Macau SAR" else c for c in chosen]
        if MACAO_SPELLING[q] not in chosen:
            chosen.append(MACAO_SPELLING[q])
    if source == "GAS" and q in (0, 5, 12):  # a question with all three Indian / Pakistani qualifiers
        for c in ("India (Current national sample)", "India (Old national sample)", "Pakistan (Non-national sample)"):
            if c not in chosen:
                chosen.append(c)
    for c, _kind in DEFECTS.get(q, []):
        if c not in chosen:
            chosen.append(c)
    return chosen


def _selections(shares: dict[str, list[float]]) -> str:
    body = ", ".join(f"{country!r}: {values!r}" for country, values in shares.items())
    return "defaultdict(<class 'list'>, {" + body + "})"


def _rows() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows = []
    for q, (source, question, options) in enumerate(QUESTIONS):
        shares: dict[str, list[float]] = {}
        for country in _countries(rng, source, q):
            shares[country] = _shares(rng, country, len(options), q)
        for country, kind in DEFECTS.get(q, []):
            k = len(options)
            shares[country] = ([0.0] * k if kind == "zeros" else
                               shares[country] + [0.01] if kind == "long" else shares[country][:-1])
        rows.append({"question": question, "selections": _selections(shares), "options": repr(options),
                     "source": source})
    return rows


def _csv(rows: list[dict[str, str]], columns: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")  # pandas' to_csv defaults
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def build() -> dict[str, bytes]:
    """The two files (path relative to the sample folder -> bytes)."""
    rows = _rows()
    translated = []
    columns = COLUMNS + tuple(f"{part}_{lang}" for lang in LANGUAGES for part in ("question", "options"))
    for q, tr in TRANSLATIONS.items():
        row = dict(rows[q])
        for lang in LANGUAGES:
            text = tr.get(lang)
            row[f"question_{lang}"] = text[0] if text else ""
            row[f"options_{lang}"] = repr(text[1]) if text else ""
        translated.append(row)
    return {SAMPLE_PATH: _csv(rows, COLUMNS), TRANSLATED_PATH: _csv(translated, columns)}


def attribution(files: dict[str, bytes]) -> str:
    """The section of ``ATTRIBUTION.md`` for these files."""
    n_rows = len(QUESTIONS)
    n_tr = len(TRANSLATIONS)
    sha = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    return f"""## GlobalOpinionQA (synthetic rows in its format)

- Files: `{SAMPLE_PATH}` ({n_rows} rows), `{TRANSLATED_PATH}` ({n_tr} rows with Russian, Chinese and Turkish
  columns).
- **No upstream content.** GlobalOpinionQA (Esin Durmus, Karina Nguyen, Thomas I. Liao, Nicholas Schiefer, Amanda
  Askell, Anton Bakhtin, Carol Chen, Zac Hatfield-Dodds, Danny Hernandez, Nicholas Joseph, Liane Lovitt, Sam
  McCandlish, Orowa Sikder, Alex Tamkin, Janel Thamkul, Jared Kaplan, Jack Clark and Deep Ganguli (2023).
  *Towards Measuring the Representation of Subjective Global Opinions in Language Models*. arXiv:2306.16388;
  https://huggingface.co/datasets/Anthropic/llm_global_opinions) is licensed CC BY-NC-SA 4.0 (non-commercial,
  share-alike), so none of its rows is shipped.  Every question, option, translation and answer share in these
  files was written for moraleval by `scripts/make_goqa_sample.py` (seeded, deterministic); only the file format
  (columns `question`, `selections`, `options`, `source`, and how pandas writes them) follows the upstream
  `data/global_opinions.csv`, together with its known defects (a missing question, all-zero shares, shares and
  options of different lengths, country names with sample qualifiers and abbreviations), so that specs can be
  tested on them.  The countries are real names; their "shares" are random numbers, not survey results.
- Licence of these synthetic files: the same as moraleval's.  Use the real dataset (fetched with `moraleval data
  fetch goqa`) under its own licence for any result.

sha256 of `{SAMPLE_PATH}`: `{sha[SAMPLE_PATH]}`; of `{TRANSLATED_PATH}`: `{sha[TRANSLATED_PATH]}`.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the sample folder (default: {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true", help="compare with --out; exit 1 on any difference")
    args = ap.parse_args(argv)
    files = build()
    if args.check:
        bad = [rel for rel, data in files.items() if not (args.out / rel).is_file()
               or (args.out / rel).read_bytes() != data]
        for rel in bad:
            print(f"differs: {rel}")
        return 1 if bad else 0
    for rel, data in files.items():
        (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (args.out / rel).write_bytes(data)
        print(f"{hashlib.sha256(data).hexdigest()}  {len(data):>7}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
