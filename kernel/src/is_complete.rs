//! Whether a cell's code is complete: what a console asks before it runs what was typed.
//!
//! A scan of Rust's lexical structure (strings, raw strings, chars vs lifetimes, comments)
//! that tracks open brackets: `fn f() {` is incomplete, `}` alone is invalid.

/// The answer to an `is_complete_request`.
#[derive(Debug, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// More input is needed; `indent` is what the next line should start with.
    Incomplete {
        indent: String,
    },
    Invalid,
}

/// Decide whether `code` is complete.
pub fn is_complete(code: &str) -> Completeness {
    let chars: Vec<char> = code.chars().collect();
    let mut open: Vec<char> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while depth > 0 {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return incomplete(open.len()),
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 1;
                        }
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            '"' => match skip_string(&chars, i + 1) {
                Some(end) => i = end,
                None => return incomplete(open.len()),
            },
            'r' | 'b' if starts_raw_string(&chars, i) => match skip_raw_string(&chars, i) {
                Some(end) => i = end,
                None => return incomplete(open.len()),
            },
            '\'' => i = skip_char_or_lifetime(&chars, i),
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(expected) {
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if open.is_empty() {
        Completeness::Complete
    } else {
        incomplete(open.len())
    }
}

fn incomplete(depth: usize) -> Completeness {
    Completeness::Incomplete {
        indent: "    ".repeat(depth.max(1)),
    }
}

/// The index of the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> Option<usize> {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// `r"`, `r#"`, `br"`, `br#"` at `i` (and not part of an identifier).
fn starts_raw_string(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if chars[j] == 'b' {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return false;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

fn skip_raw_string(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    while chars[j] != '#' && chars[j] != '"' {
        j += 1;
    }
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes + 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + hashes);
        }
        j += 1;
    }
    None
}

/// A char literal (`'a'`, `'\n'`, `'\u{1F600}'`) or a lifetime (`'a`): the index of its
/// last character.
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    match (chars.get(i + 1), chars.get(i + 2)) {
        (Some('\\'), _) => {
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            j
        }
        (Some(_), Some('\'')) => i + 2,
        _ => i,
    }
}

/// Names completed while a cell runs (the session cannot be asked then): the prelude's
/// types and functions, and Rust's keywords.
pub const KNOWN_NAMES: &[&str] = &[
    "Archive",
    "DataSpec",
    "Dataset",
    "DisplayHandle",
    "Error",
    "Model",
    "ModelSpec",
    "Predictions",
    "Result",
    "Rng",
    "RunOptions",
    "RunRecord",
    "Schedule",
    "Search",
    "SearchSpace",
    "Seeds",
    "Show",
    "Status",
    "Sweep",
    "TrainConfig",
    "Trained",
    "Verification",
    "batch_preview",
    "clear_output",
    "display",
    "ensemble",
    "ensemble_runs",
    "fit",
    "human_baseline",
    "load_run",
    "prediction_dynamics",
    "predictions_of_run",
    "random_search",
    "registry",
    "request_stop",
    "resume",
    "run_all",
    "verify",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "enum",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "return",
    "self",
    "struct",
    "trait",
    "true",
    "type",
    "use",
    "where",
    "while",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete_at(depth: usize) -> Completeness {
        incomplete(depth)
    }

    #[test]
    fn open_brackets_are_incomplete() {
        assert_eq!(is_complete("fn f() {"), incomplete_at(1));
        assert_eq!(is_complete("let v = vec![(1, 2),"), incomplete_at(1));
        assert_eq!(is_complete("if a { if b {"), incomplete_at(2));
        assert_eq!(is_complete("let s = \"unterminated"), incomplete_at(1));
        assert_eq!(is_complete("/* comment"), incomplete_at(1));
    }

    #[test]
    fn balanced_code_is_complete() {
        for code in [
            "let x = 1;",
            "fn f() { g(\"}\") }",
            "let c = '{';",
            "fn f<'a>(x: &'a str) -> &'a str { x }",
            "let r = r#\"{\"#;",
            "// {\nlet x = 1;",
            "let e = '\\'';",
            "",
        ] {
            assert_eq!(is_complete(code), Completeness::Complete, "{code}");
        }
    }

    #[test]
    fn mismatched_brackets_are_invalid() {
        assert_eq!(is_complete("}"), Completeness::Invalid);
        assert_eq!(is_complete("let x = (1];"), Completeness::Invalid);
    }
}
