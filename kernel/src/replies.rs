//! Replies that need no session: kernel_info, is_complete, history, shutdown, and the word
//! completions a busy kernel gives; and the conversion of Jupyter's character positions.

use jupyter_protocol::{
    CompleteReply, CompleteRequest, HelpLink, HistoryEntry, HistoryReply, HistoryRequest,
    IsCompleteReply, IsCompleteReplyStatus, KernelInfoReply, LanguageInfo, ReplyStatus,
    ShutdownReply,
};

use crate::is_complete::{is_complete, Completeness};

pub fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "recipe".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: crate::runtime_lib::rustc_version().unwrap_or_default(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(jupyter_protocol::CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: Some("rust".into()),
        },
        banner: format!(
            "recipe {}: Rust with the recipe runtime preloaded (use recipe::prelude::*)",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![HelpLink {
            text: "A Recipe for Training Neural Networks".into(),
            url: "https://karpathy.github.io/2019/04/25/recipe/".into(),
        }],
        debugger: false,
        error: None,
    }
}

pub fn is_complete_reply(code: &str) -> IsCompleteReply {
    match is_complete(code) {
        Completeness::Complete => {
            IsCompleteReply::new(IsCompleteReplyStatus::Complete, String::new())
        }
        Completeness::Incomplete { indent } => {
            IsCompleteReply::new(IsCompleteReplyStatus::Incomplete, indent)
        }
        Completeness::Invalid => {
            IsCompleteReply::new(IsCompleteReplyStatus::Invalid, String::new())
        }
    }
}

pub fn history_reply(request: &HistoryRequest, history: &[(i64, String, String)]) -> HistoryReply {
    let with_output = match request {
        HistoryRequest::Tail { output, .. }
        | HistoryRequest::Range { output, .. }
        | HistoryRequest::Search { output, .. } => *output,
    };
    let entry = |(n, code, result): &(i64, String, String)| {
        if with_output {
            HistoryEntry::InputOutput(0, *n as usize, (code.clone(), result.clone()))
        } else {
            HistoryEntry::Input(0, *n as usize, code.clone())
        }
    };
    let entries: Vec<HistoryEntry> = match request {
        HistoryRequest::Tail { n, .. } => {
            let skip = history.len().saturating_sub((*n).max(0) as usize);
            history[skip..].iter().map(entry).collect()
        }
        HistoryRequest::Range { start, stop, .. } => history
            .iter()
            .filter(|(n, ..)| *n >= i64::from(*start) && (*stop <= 0 || *n < i64::from(*stop)))
            .map(entry)
            .collect(),
        HistoryRequest::Search {
            pattern, n, unique, ..
        } => {
            let mut matching: Vec<_> = history
                .iter()
                .filter(|(_, code, _)| glob_match(pattern, code))
                .collect();
            if *unique {
                // The latest entry of each distinct code.
                let mut seen = std::collections::BTreeSet::new();
                matching.reverse();
                matching.retain(|(_, code, _)| seen.insert(code.clone()));
                matching.reverse();
            }
            let skip = matching.len().saturating_sub((*n).max(0) as usize);
            matching[skip..].iter().map(|e| entry(e)).collect()
        }
    };
    HistoryReply::new(entries)
}

/// IPython's history search pattern: `*` any text, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

pub fn shutdown_reply(restart: bool) -> ShutdownReply {
    ShutdownReply {
        restart,
        status: ReplyStatus::Ok,
        error: None,
    }
}

/// While a cell runs: the session's variables, the prelude's names and Rust keywords that
/// start with the word before the cursor.
pub fn word_completions(r: &CompleteRequest, variables: &[String]) -> CompleteReply {
    let position = char_to_byte(&r.code, r.cursor_pos);
    let before = &r.code[..position];
    let start = before
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| {
            i + before[i..].chars().next().map_or(1, char::len_utf8)
        });
    let word = &before[start..];
    let mut matches: Vec<String> = variables
        .iter()
        .map(String::as_str)
        .chain(crate::is_complete::KNOWN_NAMES.iter().copied())
        .filter(|name| !word.is_empty() && name.starts_with(word))
        .map(String::from)
        .collect();
    matches.sort();
    matches.dedup();
    CompleteReply {
        matches,
        cursor_start: byte_to_char(&r.code, start),
        cursor_end: r.cursor_pos,
        status: ReplyStatus::Ok,
        ..CompleteReply::default()
    }
}

/// Jupyter counts cursor positions in characters (code points); Rust strings in bytes.
pub fn char_to_byte(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map_or(code.len(), |(i, _)| i)
}

pub fn byte_to_char(code: &str, bytes: usize) -> usize {
    code[..bytes.min(code.len())].chars().count()
}
