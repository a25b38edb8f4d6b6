//! Text at the character level, for next-token prediction ([`Dataset::text`],
//! [`Dataset::shakespeare`], [`Dataset::words`]).
//!
//! Loading, in order:
//! 1. read the file as UTF-8 (`\r\n` read as `\n`); with [`Text::shuffle_lines`], put its
//!    lines in a seeded order (a word list is sorted, and sorted words would split into
//!    a..r for training and s..z for testing);
//! 2. cut the characters into contiguous splits, 80% `train`, then 10% `val`, then 10%
//!    `test`: no window crosses a boundary, so no text of val or test is trained on;
//! 3. the vocabulary is the training split's characters, sorted; a character that only val or
//!    test holds becomes one extra token, `�`, and the summary counts it;
//! 4. cut each split into windows of `context + 1` characters: the first `context` are the
//!    example (token ids, as f32 like every set's features), the last `context` its targets,
//!    each the character after its position. Training windows start every `context / 4`
//!    characters (so a character is seen at four positions); val and test windows every
//!    `context`, so each character is scored once.
//!
//! An example is (context,) token ids and its target (context,) next tokens, so the task is
//! [`crate::task::Task::NextToken`]. [`Dataset::corpus`] shows the text as a reader would
//! look at it: character frequencies, line lengths, lines that occur in two splits.
//!
//! Not here: word or sub-word tokenizers, corpora larger than memory.

use super::{DataSpec, Dataset, Target};
use crate::rng::Rng;
use crate::show::{escape, html_table, svg_histogram, Show};
use crate::{show_in_jupyter, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Two plays of Shakespeare (Twelfth Night, Macbeth) as plain text, 207 KB, 62 characters;
/// source and licence (public domain) in data/ATTRIBUTION.md.
static SHAKESPEARE: &str = include_str!("../../data/shakespeare.txt");

/// Where Debian's `wamerican` package puts its word list.
pub const WORDS_PATH: &str = "/usr/share/dict/words";

/// The token a character outside the training vocabulary becomes.
pub const UNKNOWN: char = '\u{FFFD}';

/// The choices about a text, recorded in its [`DataSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextChoices {
    /// Tokens per example: the longest sequence the model sees (its block size).
    #[serde(default = "default_context")]
    pub context: usize,
    /// Put the lines in a seeded order before splitting (a word list, one word per line).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shuffle_lines: bool,
}

/// nanoGPT's Shakespeare character model uses 256; 64 keeps a step on two cores short.
fn default_context() -> usize {
    64
}

impl Default for TextChoices {
    fn default() -> Self {
        TextChoices {
            context: default_context(),
            shuffle_lines: false,
        }
    }
}

/// Where a text comes from.
#[derive(Clone, Debug)]
enum TextSource {
    File(PathBuf),
    Shakespeare,
}

/// A text about to be loaded, with the choices about it.
#[derive(Clone, Debug)]
pub struct Text {
    source: TextSource,
    choices: TextChoices,
}

impl Text {
    /// Tokens per example (default 64).
    pub fn context(mut self, tokens: usize) -> Text {
        self.choices.context = tokens;
        self
    }

    /// Put the lines in a seeded order before splitting.
    pub fn shuffle_lines(mut self) -> Text {
        self.choices.shuffle_lines = true;
        self
    }

    /// Read and cut the text (see the module header for the steps and the errors).
    pub fn load(&self) -> Result<Dataset> {
        match &self.source {
            TextSource::File(path) => load_file(path, &self.choices),
            TextSource::Shakespeare => load_shakespeare(&self.choices),
        }
    }
}

impl Dataset {
    /// A UTF-8 text file at the character level: `Dataset::text("notes.txt").context(64)
    /// .load()?`. See [`text`](self) for the splits, the vocabulary and the windows.
    pub fn text(path: impl AsRef<Path>) -> Text {
        Text {
            source: TextSource::File(path.as_ref().to_path_buf()),
            choices: TextChoices::default(),
        }
    }

    /// The embedded Shakespeare (two plays, 207 KB): the default text, needs no setup.
    pub fn shakespeare() -> Text {
        Text {
            source: TextSource::Shakespeare,
            choices: TextChoices::default(),
        }
    }

    /// Debian's English word list (`apt-get install wamerican`), one word per line, in a
    /// seeded order: the data of a makemore-style model, where a newline ends each word.
    /// Context 16 by default (the longest words are about 20 characters).
    pub fn words() -> Text {
        Dataset::text(WORDS_PATH).shuffle_lines().context(16)
    }

    /// The corpus as a reader looks at it: characters per split, their frequencies, line
    /// lengths and lines found in two splits. An error for a dataset that is not text.
    pub fn corpus(&self) -> Result<Corpus> {
        let Target::Tokens { vocab, .. } = &self.target else {
            return Err(Error::Invalid(format!(
                "{} is not text: corpus() needs a set loaded with Dataset::text",
                self.name
            )));
        };
        let text = self
            .text
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("{} has tokens but not its text", self.name)))?;
        Ok(Corpus::of(&self.name, vocab, text))
    }

    /// Token ids back to text (an id past the vocabulary reads as `�`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let vocab = self.classes();
        ids.iter()
            .map(|&i| vocab.get(i as usize).map_or("\u{FFFD}", String::as_str))
            .collect()
    }

    /// Text to token ids; an error naming the characters outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let index: BTreeMap<&str, u32> = (self.classes().iter())
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        let mut ids = Vec::new();
        let mut missing = BTreeSet::new();
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match index.get(&*c.encode_utf8(&mut buf)) {
                Some(&id) => ids.push(id),
                None => {
                    missing.insert(c);
                }
            }
        }
        if missing.is_empty() {
            Ok(ids)
        } else {
            Err(Error::Invalid(format!(
                "{:?} not in the vocabulary of {} ({} characters)",
                missing.into_iter().collect::<String>(),
                self.name,
                self.num_classes()
            )))
        }
    }
}

/// The text of each split, kept for [`Dataset::corpus`] and samples' prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitText {
    /// Split name -> its characters, as read.
    pub splits: BTreeMap<String, String>,
    /// Characters of val and test outside the training vocabulary (read as `�`).
    pub unknown: usize,
}

pub(super) fn load_shakespeare(choices: &TextChoices) -> Result<Dataset> {
    cut(
        "shakespeare",
        DataSpec::Shakespeare {
            choices: choices.clone(),
        },
        SHAKESPEARE,
        choices,
    )
}

pub(super) fn load_file(path: &Path, choices: &TextChoices) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| {
        let hint = if path == Path::new(WORDS_PATH) {
            "; install the word list with `apt-get install wamerican`"
        } else {
            ""
        };
        Error::Data(format!("cannot read {}: {e}{hint}", path.display()))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Data(format!(
            "{} is not UTF-8 text (invalid byte at offset {}); convert it, e.g. `iconv -t \
             UTF-8`",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let name = path
        .file_stem()
        .map_or("text".into(), |s| s.to_string_lossy().into_owned());
    let spec = DataSpec::Text {
        path: path.to_path_buf(),
        choices: choices.clone(),
    };
    cut(&name, spec, &text, choices)
}

/// Steps 1 to 4 of the module header.
fn cut(name: &str, spec: DataSpec, text: &str, choices: &TextChoices) -> Result<Dataset> {
    let t = choices.context;
    if t == 0 {
        return Err(Error::Invalid(
            "a context of 0 tokens has nothing to predict".into(),
        ));
    }
    // 1. Lines, in a seeded order if asked.
    let mut text = text.replace("\r\n", "\n");
    if choices.shuffle_lines {
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        Rng::stream(0, "text/lines").shuffle(&mut lines);
        text = lines.iter().map(|l| format!("{l}\n")).collect();
    }
    let chars: Vec<char> = text.chars().collect();
    // 2. Contiguous splits.
    let n = chars.len();
    let bounds = [
        ("train", 0, n * 8 / 10),
        ("val", n * 8 / 10, n * 9 / 10),
        ("test", n * 9 / 10, n),
    ];
    if let Some((split, a, b)) = bounds.iter().find(|(_, a, b)| b - a < t + 1) {
        return Err(Error::Data(format!(
            "{name}: {n} characters are too few for a context of {t}: its {split} split holds \
             {} and needs at least {}; use a longer text or a smaller .context()",
            b - a,
            t + 1
        )));
    }
    // 3. The training split's vocabulary, and `�` for what only val and test hold.
    let known: BTreeSet<char> = chars[..bounds[0].2].iter().copied().collect();
    let unknown = chars[bounds[0].2..]
        .iter()
        .filter(|c| !known.contains(c))
        .count();
    let mut vocab: Vec<char> = known.into_iter().collect();
    if unknown > 0 {
        vocab.push(UNKNOWN);
    }
    let index: BTreeMap<char, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as u32))
        .collect();
    let unknown_id = vocab.len() as u32 - 1;
    let ids: Vec<u32> = chars
        .iter()
        .map(|c| index.get(c).copied().unwrap_or(unknown_id))
        .collect();
    // 4. Windows: inputs ids[p..p+t], targets ids[p+1..p+t+1].
    let mut features = Vec::new();
    let mut next = Vec::new();
    let mut splits = BTreeMap::new();
    let mut split_text = BTreeMap::new();
    for (split, a, b) in bounds {
        let stride = if split == "train" { (t / 4).max(1) } else { t };
        let mut members = Vec::new();
        let mut p = a;
        while p + t < b {
            members.push(next.len() / t);
            features.extend(ids[p..p + t].iter().map(|&i| i as f32));
            next.extend_from_slice(&ids[p + 1..p + t + 1]);
            p += stride;
        }
        splits.insert(split.to_string(), members);
        split_text.insert(split.to_string(), chars[a..b].iter().collect::<String>());
    }
    let vocab: Vec<String> = vocab.iter().map(|c| c.to_string()).collect();
    let mut data = Dataset::new(
        name,
        spec,
        features,
        Target::Tokens {
            next,
            context: t,
            vocab,
        },
        vec![t],
        splits,
    )?;
    data.value_range = (0.0, unknown_id as f32);
    if unknown > 0 {
        data.notes.push(format!(
            "{unknown} characters of val and test are not in the training split's vocabulary; \
             they read as the token {UNKNOWN}"
        ));
    }
    data.text = Some(SplitText {
        splits: split_text,
        unknown,
    });
    Ok(data)
}

/// A text corpus as [`Dataset::corpus`] shows it.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub name: String,
    /// Split -> characters.
    pub characters: BTreeMap<String, usize>,
    /// (character, count in train), most frequent first.
    pub frequencies: Vec<(String, usize)>,
    /// Characters of val and test outside the training vocabulary.
    pub unknown: usize,
    /// The length of every line of the training split, in characters.
    pub line_lengths: Vec<usize>,
    /// Lines of val or test (of `shared_min` characters or more) that the training split
    /// also holds, with their count: text a model could recall instead of predict.
    pub shared_lines: Vec<(String, usize)>,
    /// Val and test lines of `shared_min` characters or more.
    pub long_lines: usize,
    /// The shortest line that counts as shared: 20 characters, or the median training line
    /// when that is shorter (a word list).
    pub shared_min: usize,
}

/// Lines shorter than this ("Ay.", "Exit.") are common to any two texts; only longer shared
/// lines say that a split repeats another. A list of short lines (words) uses its median.
const SHARED_LINE_MIN: usize = 20;

impl Corpus {
    fn of(name: &str, vocab: &[String], text: &SplitText) -> Corpus {
        let train = text.splits.get("train").map_or("", String::as_str);
        let mut counts: BTreeMap<char, usize> = BTreeMap::new();
        for c in train.chars() {
            *counts.entry(c).or_default() += 1;
        }
        let mut frequencies: Vec<(String, usize)> = vocab
            .iter()
            .map(|v| {
                let c = v.chars().next().unwrap_or(UNKNOWN);
                (v.clone(), counts.get(&c).copied().unwrap_or(0))
            })
            .collect();
        frequencies.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let train_lines: BTreeSet<&str> = train.lines().collect();
        let mut lengths: Vec<usize> = train.lines().map(|l| l.chars().count()).collect();
        lengths.sort_unstable();
        let median = lengths.get(lengths.len() / 2).copied().unwrap_or(0);
        let shared_min = SHARED_LINE_MIN.min(median.max(1));
        let mut shared: BTreeMap<String, usize> = BTreeMap::new();
        let mut long_lines = 0;
        for (split, body) in &text.splits {
            if split == "train" {
                continue;
            }
            for line in body.lines().filter(|l| l.chars().count() >= shared_min) {
                long_lines += 1;
                if train_lines.contains(line) {
                    *shared.entry(line.to_string()).or_default() += 1;
                }
            }
        }
        let mut shared_lines: Vec<(String, usize)> = shared.into_iter().collect();
        shared_lines.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Corpus {
            name: name.to_string(),
            characters: (text.splits.iter())
                .map(|(k, v)| (k.clone(), v.chars().count()))
                .collect(),
            frequencies,
            unknown: text.unknown,
            line_lengths: train.lines().map(|l| l.chars().count()).collect(),
            shared_lines,
            long_lines,
            shared_min,
        }
    }

    /// (min, median, mean, max) line length of the training split.
    pub fn line_stats(&self) -> (usize, usize, f64, usize) {
        let mut sorted = self.line_lengths.clone();
        sorted.sort_unstable();
        let n = sorted.len().max(1);
        let mean = sorted.iter().sum::<usize>() as f64 / n as f64;
        (
            sorted.first().copied().unwrap_or(0),
            sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            mean,
            sorted.last().copied().unwrap_or(0),
        )
    }

    fn shown(c: &str) -> String {
        match c {
            "\n" => "\\n".into(),
            " " => "space".into(),
            other => other.into(),
        }
    }

    fn header_lines(&self) -> Vec<String> {
        let (min, median, mean, max) = self.line_stats();
        let total: usize = self.frequencies.iter().map(|f| f.1).sum();
        let top: Vec<String> = (self.frequencies.iter().take(10))
            .map(|(c, n)| {
                format!(
                    "{} {:.1}%",
                    Corpus::shown(c),
                    100.0 * *n as f64 / total.max(1) as f64
                )
            })
            .collect();
        let rare: Vec<String> = (self.frequencies.iter().rev().take(5))
            .map(|(c, n)| format!("{} ({n})", Corpus::shown(c)))
            .collect();
        let splits: Vec<String> = (self.characters.iter())
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mut lines = vec![
            format!(
                "{}: {} characters ({}), a vocabulary of {}",
                self.name,
                self.characters.values().sum::<usize>(),
                splits.join(", "),
                self.frequencies.len()
            ),
            format!("most frequent in train: {}", top.join(", ")),
            format!("rarest in train: {}", rare.join(", ")),
            format!(
                "train lines: {} lines, length min {min}, median {median}, mean {mean:.1}, max \
                 {max} characters",
                self.line_lengths.len()
            ),
            format!(
                "{} of {} val/test lines of {}+ characters also occur in train",
                self.shared_lines.iter().map(|s| s.1).sum::<usize>(),
                self.long_lines,
                self.shared_min
            ),
        ];
        if self.unknown > 0 {
            lines.push(format!(
                "{} val/test characters outside the training vocabulary (read as {UNKNOWN})",
                self.unknown
            ));
        }
        lines
    }
}

impl Show for Corpus {
    fn text(&self) -> String {
        let mut out = self.header_lines().join("\n");
        for (line, n) in self.shared_lines.iter().take(5) {
            out.push_str(&format!("\n  shared x{n}: {line}"));
        }
        out
    }

    fn html(&self) -> String {
        let mut out = String::from("<div>");
        for line in self.header_lines() {
            out.push_str(&format!("<div>{}</div>", escape(&line)));
        }
        let lengths: Vec<f64> = self.line_lengths.iter().map(|&l| l as f64).collect();
        out.push_str(&svg_histogram(
            &lengths,
            30,
            "train line length (characters)",
        ));
        if !self.shared_lines.is_empty() {
            let rows: Vec<Vec<String>> = (self.shared_lines.iter().take(10))
                .map(|(l, n)| vec![l.clone(), n.to_string()])
                .collect();
            out.push_str(&html_table(
                &["line also in train".into(), "times in val/test".into()],
                &rows,
            ));
        }
        out.push_str("</div>");
        out
    }
}

show_in_jupyter!(Corpus);

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.txt");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn issue_22_text_is_cut_into_contiguous_splits_of_next_token_windows() {
        // 100 characters: train 0..80, val 80..90, test 90..100; the last two hold a `z`
        // the training split never shows.
        let body: String = (0..80).map(|i| (b'a' + (i % 5) as u8) as char).collect();
        let (_dir, path) = write(&format!("{body}abcdeabcdezabcdeabcd"));
        let data = Dataset::text(&path).context(8).load().unwrap();
        assert_eq!(data.shape, [8]);
        assert_eq!(data.classes(), ["a", "b", "c", "d", "e", "\u{FFFD}"]);
        // Train windows every 2 characters (8 / 4) while p + 8 < 80: 36 of them; val and
        // test every 8 while p + 8 < end: one each.
        assert_eq!(data.split("train").unwrap().len(), 36);
        assert_eq!(data.split("val").unwrap().len(), 1);
        assert_eq!(data.split("test").unwrap().len(), 1);
        // An example's targets are its tokens shifted by one.
        let (x, y) = data.batch(&[1], &candle_core::Device::Cpu).unwrap();
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<u32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            data.decode(&x.iter().map(|&v| v as u32).collect::<Vec<_>>()),
            "cdeabcde"
        );
        assert_eq!(data.decode(&y), "deabcdea");
        // The test window starts with the unknown character, which the notes count.
        let test = data.split("test").unwrap()[0];
        let first: Vec<u32> = data
            .example(test)
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(data.decode(&first), "\u{FFFD}abcdeab");
        assert_eq!(data.target_text(test), "abcdeabc");
        assert!(
            data.notes[0].starts_with("1 characters of val and test"),
            "{:?}",
            data.notes
        );
        assert!(data
            .encode("abz")
            .unwrap_err()
            .to_string()
            .contains("\"z\""));
        // The spec reloads the same bits.
        assert_eq!(
            data.spec.load().unwrap().fingerprint().hash,
            data.fingerprint().hash
        );
        let task = data.task();
        assert_eq!(task, crate::task::Task::NextToken { vocab: 6 });
    }

    #[test]
    fn issue_22_too_short_a_text_or_a_missing_word_list_says_what_to_do() {
        let (_dir, path) = write("short text");
        let err = Dataset::text(&path).load().unwrap_err().to_string();
        assert!(err.contains("too few for a context of 64"), "{err}");
        assert!(err.contains("smaller .context()"), "{err}");
        let err = Dataset::text("/nonexistent/words").load().unwrap_err();
        assert!(err.to_string().contains("cannot read /nonexistent/words"));
        if !Path::new(WORDS_PATH).exists() {
            let err = Dataset::words().load().unwrap_err().to_string();
            assert!(err.contains("apt-get install wamerican"), "{err}");
        }
        let (_dir, path) = write("");
        std::fs::write(&path, [0x66, 0xff, 0x66]).unwrap();
        let err = Dataset::text(&path).load().unwrap_err().to_string();
        assert!(
            err.contains("not UTF-8 text (invalid byte at offset 1)"),
            "{err}"
        );
    }

    #[test]
    fn issue_22_shakespeare_is_embedded_and_its_corpus_view_reads_like_text() {
        let data = Dataset::shakespeare().load().unwrap();
        assert_eq!(data.num_classes(), 62);
        assert!(
            data.notes.is_empty(),
            "every val/test character is in train"
        );
        let corpus = data.corpus().unwrap();
        assert_eq!(corpus.characters.values().sum::<usize>(), 206_776);
        assert_eq!(corpus.frequencies[0].0, " ");
        let text = corpus.text();
        assert!(text.contains("a vocabulary of 62"), "{text}");
        assert!(text.contains("also occur in train"), "{text}");
        assert!(corpus.html().contains("<svg"));
        // Shuffled lines: a seeded order, the same every time.
        let (_dir, path) = write(&(0..400).map(|i| format!("w{i:03}\n")).collect::<String>());
        let a = Dataset::text(&path)
            .shuffle_lines()
            .context(4)
            .load()
            .unwrap();
        let b = Dataset::text(&path)
            .shuffle_lines()
            .context(4)
            .load()
            .unwrap();
        assert_eq!(a.fingerprint().hash, b.fingerprint().hash);
        let train = &a.text.as_ref().unwrap().splits["train"];
        assert!(!train.starts_with("w000\nw001\n"), "lines are shuffled");
    }
}
