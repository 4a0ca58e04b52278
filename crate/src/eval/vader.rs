//! VADER compound sentiment (Hutto & Gilbert, ICWSM 2014): the offline signal for the
//! "uplifting" preference.
//!
//! The rules follow the reference implementation, vaderSentiment 3.3.2, down to its quirks
//! (case-sensitive emoticon keys looked up in lower case, the `but` rule that rescales the
//! first equal score, emoji replaced one code point at a time): the point of the metric is
//! that its numbers are the ones people compare against, so matching the reference beats
//! "fixing" it. The MIT-licensed lexicons ship in `data/` with their license header.

use std::collections::HashMap;
use std::sync::OnceLock;

const LEXICON_FILE: &str = include_str!("data/vader_lexicon.txt");
const EMOJI_FILE: &str = include_str!("data/vader_emoji.txt");

/// Empirical increment of a booster word ("very") and decrement of a dampener ("barely").
const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
/// Increment for a sentiment word in ALL CAPS among mixed-case words.
const C_INCR: f64 = 0.733;
/// Scale applied by a negation ("not good").
const N_SCALAR: f64 = -0.74;
/// Normalisation constant of the compound score: x / sqrt(x² + α).
const ALPHA: f64 = 15.0;

#[rustfmt::skip]
const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't", "can't",
    "couldn't", "daren't", "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt", "mightnt", "mustnt",
    "neither", "don't", "hadn't", "hasn't", "haven't", "isn't", "mightn't", "mustn't", "neednt", "needn't",
    "never", "none", "nope", "nor", "not", "nothing", "nowhere", "oughtnt", "shant", "shouldnt", "uhuh", "wasnt",
    "werent", "oughtn't", "shan't", "shouldn't", "uh-uh", "wasn't", "weren't", "without", "wont", "wouldnt",
    "won't", "wouldn't", "rarely", "seldom", "despite",
];

#[rustfmt::skip]
const BOOST_UP: &[&str] = &[
    "absolutely", "amazingly", "awfully", "completely", "considerable", "considerably", "decidedly", "deeply",
    "effing", "enormous", "enormously", "entirely", "especially", "exceptional", "exceptionally", "extreme",
    "extremely", "fabulously", "flipping", "flippin", "frackin", "fracking", "fricking", "frickin", "frigging",
    "friggin", "fully", "fuckin", "fucking", "fuggin", "fugging", "greatly", "hella", "highly", "hugely",
    "incredible", "incredibly", "intensely", "major", "majorly", "more", "most", "particularly", "purely",
    "quite", "really", "remarkably", "so", "substantially", "thoroughly", "total", "totally", "tremendous",
    "tremendously", "uber", "unbelievably", "unusually", "utter", "utterly", "very",
];

#[rustfmt::skip]
const BOOST_DOWN: &[&str] = &[
    "almost", "barely", "hardly", "just enough", "kind of", "kinda", "kindof", "kind-of", "less", "little",
    "marginal", "marginally", "occasional", "occasionally", "partly", "scarce", "scarcely", "slight", "slightly",
    "somewhat", "sort of", "sorta", "sortof", "sort-of",
];

/// Idioms and phrases whose valence replaces that of the lexicon word inside them.
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// Python's `string.punctuation`, stripped from the ends of words.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

struct Lexicons {
    words: HashMap<&'static str, f64>,
    emoji: HashMap<char, &'static str>,
}

/// The data lines of a bundled lexicon: everything after the license header, which ends
/// at the first empty line.
fn data_lines(file: &'static str) -> impl Iterator<Item = &'static str> {
    file.lines().skip_while(|l| !l.is_empty()).filter(|l| !l.is_empty())
}

fn lexicons() -> &'static Lexicons {
    static LEX: OnceLock<Lexicons> = OnceLock::new();
    LEX.get_or_init(|| {
        let mut words = HashMap::new();
        // The bundled files are checked by the tests below; a malformed line is skipped.
        for line in data_lines(LEXICON_FILE) {
            if let Some((w, v)) = line.split_once('\t') {
                if let Ok(v) = v.trim().parse::<f64>() {
                    // Later duplicates win, as in the reference's dict.
                    words.insert(w, v);
                }
            }
        }
        let mut emoji = HashMap::new();
        for line in data_lines(EMOJI_FILE) {
            if let Some((e, d)) = line.split_once('\t') {
                let mut chars = e.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    emoji.insert(c, d);
                }
            }
        }
        Lexicons { words, emoji }
    })
}

fn booster(word: &str) -> Option<f64> {
    if BOOST_UP.contains(&word) {
        Some(B_INCR)
    } else if BOOST_DOWN.contains(&word) {
        Some(B_DECR)
    } else {
        None
    }
}

fn special_case(seq: &str) -> Option<f64> {
    SPECIAL_CASES.iter().find(|(k, _)| *k == seq).map(|(_, v)| *v)
}

/// Python's `str.isupper`: at least one cased character and no lower-case one.
fn is_upper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// Python's `str.split()` separators (its isspace also counts U+001C..U+001F).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Strips surrounding punctuation unless that leaves two characters or fewer (then the
/// token is probably an emoticon such as ":)" and is kept whole).
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| PUNCTUATION.contains(c));
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

fn negated(word: &str) -> bool {
    NEGATE.contains(&word) || word.contains("n't")
}

/// The compound score in [-1, 1]: > 0.05 reads as positive, < -0.05 as negative.
pub fn compound(text: &str) -> f64 {
    let lex = lexicons();
    // Emoji become their descriptions ("😊" -> "smiling face with smiling eyes").
    let mut replaced = String::with_capacity(text.len());
    let mut prev_space = true;
    for c in text.chars() {
        if let Some(d) = lex.emoji.get(&c) {
            if !prev_space {
                replaced.push(' ');
            }
            replaced.push_str(d);
            prev_space = false;
        } else {
            replaced.push(c);
            prev_space = c == ' ';
        }
    }
    let text = replaced.trim();
    let words: Vec<&str> = text.split(is_py_space).filter(|w| !w.is_empty()).map(strip_punc_if_word).collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let all_caps = words.iter().filter(|w| is_upper(w)).count();
    // Emphasis by capitals only counts when some, not all, words are in capitals.
    let cap_diff = all_caps > 0 && all_caps < words.len();
    let ctx = Ctx { lex: &lex.words, words: &words, lower: &lower, cap_diff };

    let mut sentiments = Vec::with_capacity(words.len());
    for i in 0..words.len() {
        let kind_of = i + 1 < words.len() && lower[i] == "kind" && lower[i + 1] == "of";
        if booster(&lower[i]).is_some() || kind_of {
            sentiments.push(0.0);
        } else {
            sentiments.push(ctx.valence(i));
        }
    }
    but_check(&lower, &mut sentiments);
    if sentiments.is_empty() {
        return 0.0;
    }
    let mut sum: f64 = sentiments.iter().sum();
    let emph = punctuation_emphasis(text);
    if sum > 0.0 {
        sum += emph;
    } else if sum < 0.0 {
        sum -= emph;
    }
    (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

struct Ctx<'a> {
    lex: &'a HashMap<&'static str, f64>,
    words: &'a [&'a str],
    lower: &'a [String],
    cap_diff: bool,
}

impl Ctx<'_> {
    fn known(&self, i: usize) -> bool {
        self.lex.contains_key(self.lower[i].as_str())
    }

    /// Valence of word i with the rules that look at its neighbours.
    fn valence(&self, i: usize) -> f64 {
        let lower = self.lower;
        let Some(&base) = self.lex.get(lower[i].as_str()) else {
            return 0.0;
        };
        let mut v = base;
        // "no" before a sentiment word negates it instead of counting as negative itself.
        if lower[i] == "no" && i + 1 != lower.len() && self.known(i + 1) {
            v = 0.0;
        }
        if (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
        {
            v = base * N_SCALAR;
        }
        if is_upper(self.words[i]) && self.cap_diff {
            v += if v > 0.0 { C_INCR } else { -C_INCR };
        }
        for start in 0..3 {
            if i > start && !self.known(i - start - 1) {
                let mut s = self.scalar_inc_dec(i - start - 1, v);
                if start == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start == 2 && s != 0.0 {
                    s *= 0.9;
                }
                v += s;
                v = negation_check(v, lower, start, i);
                if start == 2 {
                    v = special_idioms_check(v, lower, i);
                }
            }
        }
        self.least_check(v, i)
    }

    /// The boost a preceding booster/dampener word adds, signed like the valence.
    fn scalar_inc_dec(&self, j: usize, valence: f64) -> f64 {
        let Some(mut scalar) = booster(&self.lower[j]) else {
            return 0.0;
        };
        if valence < 0.0 {
            scalar = -scalar;
        }
        if is_upper(self.words[j]) && self.cap_diff {
            scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        scalar
    }

    /// "least happy" negates; "at least happy" and "very least" do not.
    fn least_check(&self, v: f64, i: usize) -> f64 {
        let lower = self.lower;
        if i > 1 && !self.known(i - 1) && lower[i - 1] == "least" {
            if lower[i - 2] != "at" && lower[i - 2] != "very" {
                return v * N_SCALAR;
            }
        } else if i > 0 && !self.known(i - 1) && lower[i - 1] == "least" {
            return v * N_SCALAR;
        }
        v
    }
}

fn negation_check(v: f64, lower: &[String], start: usize, i: usize) -> f64 {
    let w = |k: usize| lower[i - k].as_str();
    match start {
        0 if negated(w(1)) => v * N_SCALAR,
        1 => {
            if w(2) == "never" && (w(1) == "so" || w(1) == "this") {
                v * 1.25
            } else if w(2) == "without" && w(1) == "doubt" {
                v
            } else if negated(w(2)) {
                v * N_SCALAR
            } else {
                v
            }
        }
        2 => {
            // The reference's operator precedence: (never AND so/this) OR so/this right before.
            if (w(3) == "never" && (w(2) == "so" || w(2) == "this")) || (w(1) == "so" || w(1) == "this") {
                v * 1.25
            } else if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") {
                v
            } else if negated(w(3)) {
                v * N_SCALAR
            } else {
                v
            }
        }
        _ => v,
    }
}

/// Idioms around word i (i >= 3) and the two-word dampeners "kind of", "sort of".
fn special_idioms_check(mut v: f64, lower: &[String], i: usize) -> f64 {
    let onezero = format!("{} {}", lower[i - 1], lower[i]);
    let twoonezero = format!("{} {} {}", lower[i - 2], lower[i - 1], lower[i]);
    let twoone = format!("{} {}", lower[i - 2], lower[i - 1]);
    let threetwoone = format!("{} {} {}", lower[i - 3], lower[i - 2], lower[i - 1]);
    let threetwo = format!("{} {}", lower[i - 3], lower[i - 2]);
    for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
        if let Some(x) = special_case(seq) {
            v = x;
            break;
        }
    }
    if lower.len() - 1 > i {
        if let Some(x) = special_case(&format!("{} {}", lower[i], lower[i + 1])) {
            v = x;
        }
    }
    if lower.len() - 1 > i + 1 {
        if let Some(x) = special_case(&format!("{} {} {}", lower[i], lower[i + 1], lower[i + 2])) {
            v = x;
        }
    }
    for ngram in [&threetwoone, &threetwo, &twoone] {
        if let Some(b) = booster(ngram) {
            v += b;
        }
    }
    v
}

/// Halves scores before the first "but" and scales those after it by 1.5. Replicates the
/// reference exactly, including that it rescales the FIRST score equal to the current one
/// (Python's `list.index`), which matters when equal scores repeat.
fn but_check(lower: &[String], s: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else {
        return;
    };
    for p in 0..s.len() {
        let x = s[p];
        let si = s.iter().position(|&y| y == x).unwrap_or(p);
        if si < bi {
            s[si] = x * 0.5;
        } else if si > bi {
            s[si] = x * 1.5;
        }
    }
}

/// Up to four "!" add 0.292 each; two or three "?" add 0.18 each, more add 0.96.
fn punctuation_emphasis(text: &str) -> f64 {
    let ep = text.matches('!').count().min(4) as f64 * 0.292;
    let qm = match text.matches('?').count() {
        n @ 2..=3 => n as f64 * 0.18,
        n if n > 3 => 0.96,
        _ => 0.0,
    };
    ep + qm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of the reference implementation (vaderSentiment 3.3.2, rounded to 4 places).
    const REFERENCE: &[(&str, f64)] = &[
        ("VADER is smart, handsome, and funny.", 0.8316),
        ("VADER is smart, handsome, and funny!", 0.8439),
        ("VADER is very smart, handsome, and funny.", 0.8545),
        ("VADER is VERY SMART, handsome, and FUNNY.", 0.9227),
        ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342),
        ("VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!", 0.9469),
        ("VADER is not smart, handsome, nor funny.", -0.7424),
        ("The book was good.", 0.4404),
        ("At least it isn't a horrible book.", 0.431),
        ("The book was only kind of good.", 0.3832),
        ("The plot was good, but the characters are uncompelling and the dialog is not great.", -0.7042),
        ("Today SUX!", -0.5461),
        ("Today only kinda sux! But I'll get by, lol", 0.5249),
        ("Make sure you :) or :D today!", 0.8633),
        ("Catch utf-8 emoji such as such as 💘 and 💋 and 😁", 0.875),
        ("Not bad at all", 0.431),
        ("", 0.0),
        ("No, I am not happy.", -0.4585),
        ("There is no problem with that.", 0.3089),
        ("It was good, but it was good and bad.", 0.0129),
        ("This is never so good, without doubt a great day.", 0.8979),
        ("I am at least happy, the least happy person alive.", 0.5109),
        ("That movie was the bomb, a sort of great kiss of death.", 0.2764),
        ("Great?? Really??? Wow!!!!!", 0.9066),
        ("Ok, fine. It's ok.", 0.2023),
        ("I love it 😊 so much❤️", 0.8807),
        ("Eat more vegetables, drink water, and sleep well: you will feel great and full of energy!", 0.8221),
    ];

    #[test]
    fn matches_the_reference_implementation() {
        for (text, want) in REFERENCE {
            let got = compound(text);
            assert!((got - want).abs() < 5.1e-5, "{text:?}: got {got}, reference {want}");
        }
    }

    #[test]
    fn bundled_lexicons_parse_completely() {
        let lex = lexicons();
        // 7520 lines in the reference file, 14 of them repeated keys.
        assert_eq!(lex.words.len(), 7506);
        assert_eq!(lex.words.get("good"), Some(&1.9));
        assert_eq!(lex.words.get(":)"), Some(&2.0));
        assert_eq!(data_lines(LEXICON_FILE).count(), 7520);
        assert_eq!(lex.emoji.len(), data_lines(EMOJI_FILE).count());
        assert_eq!(lex.emoji.get(&'😁').copied(), Some("beaming face with smiling eyes"));
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = ["!!!", "?", "no", "no no no", "but", "but but good", "kind", "kind of", "least", "a b c d e f"];
        let odder = ["\u{1c}\u{1f}", "😁😁😁", "NOT GOOD", "ǅ", "\t\n "];
        for t in odd.iter().chain(&odder) {
            let c = compound(t);
            assert!((-1.0..=1.0).contains(&c), "{t:?} -> {c}");
        }
    }
}
