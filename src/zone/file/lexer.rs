//! Streaming tokenizer for RFC 1035 §5.1 master files.
//!
//! Works on the raw file bytes and hands out slices of them: no allocation per token.
//! Escapes (`\X`, `\DDD`) are kept verbatim in the token; names and strings decode them
//! where they are used, because their meaning differs (a `\.` in a name is not a label
//! separator, in a string it is just a dot).

/// One token of an entry. `text` is the raw bytes (for a quoted string: without the quotes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub text: &'a [u8],
    pub quoted: bool,
}

/// Where an entry starts and whether its first line began with a blank (owner inherited).
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryHead {
    pub line: usize,
    pub blank_owner: bool,
}

#[derive(Debug)]
pub(super) struct LexError {
    pub line: usize,
    pub message: &'static str,
}

pub(super) struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    /// 1-based number of the line `pos` is on.
    line: usize,
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')')
}

impl<'a> Lexer<'a> {
    pub fn new(data: &'a [u8]) -> Lexer<'a> {
        Lexer {
            data,
            pos: 0,
            line: 1,
        }
    }

    /// Skips the rest of the current physical line (error recovery).
    fn skip_line(&mut self) {
        while let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
                return;
            }
        }
    }

    /// Reads the next entry (one logical line: parentheses join physical lines) into
    /// `tokens`. Returns `None` at the end of the data. After an error the rest of the
    /// offending line is skipped, so the caller can go on and report further errors.
    pub fn next_entry(
        &mut self,
        tokens: &mut Vec<Token<'a>>,
    ) -> Option<Result<EntryHead, LexError>> {
        tokens.clear();
        let mut depth = 0u32;
        let mut head = EntryHead {
            line: self.line,
            blank_owner: false,
        };
        let mut at_line_start = true;
        let mut paren_line = self.line;
        loop {
            let Some(&b) = self.data.get(self.pos) else {
                if depth > 0 {
                    return Some(Err(LexError {
                        line: paren_line,
                        message: "unbalanced parentheses: '(' is never closed",
                    }));
                }
                return if tokens.is_empty() {
                    None
                } else {
                    Some(Ok(head))
                };
            };
            if at_line_start {
                at_line_start = false;
                if depth == 0 && tokens.is_empty() {
                    // RFC 1035 §5.1: an entry starting with a blank reuses the last owner.
                    head = EntryHead {
                        line: self.line,
                        blank_owner: b == b' ' || b == b'\t',
                    };
                }
            }
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    if depth == 0 {
                        if !tokens.is_empty() {
                            return Some(Ok(head));
                        }
                        at_line_start = true;
                    }
                }
                b';' => {
                    // Comment up to (not including) the newline, also inside parentheses.
                    while let Some(&c) = self.data.get(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                b'(' => {
                    if depth == 0 {
                        paren_line = self.line;
                    }
                    depth += 1;
                    self.pos += 1;
                }
                b')' => {
                    if depth == 0 {
                        let line = self.line;
                        self.skip_line();
                        return Some(Err(LexError {
                            line,
                            message: "unbalanced parentheses: ')' without '('",
                        }));
                    }
                    depth -= 1;
                    self.pos += 1;
                }
                b'"' => {
                    let start_line = self.line;
                    self.pos += 1;
                    let start = self.pos;
                    loop {
                        match self.data.get(self.pos) {
                            None => {
                                return Some(Err(LexError {
                                    line: start_line,
                                    message: "unterminated quoted string",
                                }));
                            }
                            Some(b'"') => break,
                            Some(b'\\') => {
                                if self.data.get(self.pos + 1) == Some(&b'\n') {
                                    self.line += 1;
                                }
                                self.pos += 2;
                            }
                            Some(b'\n') => {
                                self.line += 1;
                                self.pos += 1;
                            }
                            Some(_) => self.pos += 1,
                        }
                    }
                    let text = self.data.get(start..self.pos).unwrap_or_default();
                    self.pos += 1; // closing quote
                    tokens.push(Token { text, quoted: true });
                }
                _ => {
                    let start = self.pos;
                    while let Some(&c) = self.data.get(self.pos) {
                        if c == b'\\' {
                            // An escaped delimiter stays in the token (e.g. `\ ` or `\;`),
                            // but an escaped newline would break line counting: stop there.
                            match self.data.get(self.pos + 1) {
                                Some(b'\n') | None => {
                                    self.pos += 1;
                                }
                                Some(_) => self.pos += 2,
                            }
                            continue;
                        }
                        if is_delimiter(c) {
                            break;
                        }
                        self.pos += 1;
                    }
                    let end = self.pos.min(self.data.len());
                    let text = self.data.get(start..end).unwrap_or_default();
                    tokens.push(Token {
                        text,
                        quoted: false,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(s: &str) -> Vec<(usize, bool, Vec<String>)> {
        let mut lx = Lexer::new(s.as_bytes());
        let mut toks = Vec::new();
        let mut out = Vec::new();
        while let Some(r) = lx.next_entry(&mut toks) {
            let h = r.unwrap();
            out.push((
                h.line,
                h.blank_owner,
                toks.iter()
                    .map(|t| String::from_utf8_lossy(t.text).into_owned())
                    .collect(),
            ));
        }
        out
    }

    #[test]
    fn parentheses_comments_and_quotes() {
        let e = entries("a 1 IN SOA ( x ; c (\n y ) ; z\n\n b TXT \"q ; r\" s\\;t\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, 1);
        assert_eq!(e[0].2, ["a", "1", "IN", "SOA", "x", "y"]);
        assert_eq!(e[1].0, 4);
        assert!(e[1].1);
        assert_eq!(e[1].2, ["b", "TXT", "q ; r", "s\\;t"]);
    }

    #[test]
    fn errors_are_line_numbered() {
        let mut lx = Lexer::new(b"a A 1.2.3.4\nb ) x\nc \"open\n");
        let mut t = Vec::new();
        assert!(lx.next_entry(&mut t).unwrap().is_ok());
        assert_eq!(lx.next_entry(&mut t).unwrap().unwrap_err().line, 2);
        assert_eq!(lx.next_entry(&mut t).unwrap().unwrap_err().line, 3);
        assert!(lx.next_entry(&mut t).is_none());
    }
}
