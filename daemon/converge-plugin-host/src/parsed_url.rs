//! The URLs plugins send to, parsed once per thread rather than once per
//! request. A plugin sends most of its requests to a few URLs (a webhook's
//! one address), and parsing one (the host's IDNA mapping and address, then
//! the `Uri` the client sends) took 7,000 instructions, more than every
//! other check on a request together. Both results depend on the text
//! alone, so a remembered one is the one parsing would give.

use std::cell::RefCell;
use std::num::NonZeroUsize;

use http::Uri;
use lru::LruCache;
use url::Url;

/// URLs remembered per thread: the daemon's few worker threads each keep
/// at most this many.
const REMEMBERED: usize = 64;

/// Longer URLs (long query strings) are parsed every time rather than kept.
const LONGEST_REMEMBERED: usize = 2048;

/// A URL as the checks read it, and as the client sends it: `Err` holds why
/// `http` could not read a URL that `url` could.
#[derive(Debug, Clone)]
pub(crate) struct ParsedUrl {
    pub(crate) url: Url,
    pub(crate) uri: Result<Uri, String>,
}

thread_local! {
    static PARSED: RefCell<LruCache<String, ParsedUrl>> =
        RefCell::new(LruCache::new(NonZeroUsize::new(REMEMBERED).expect("not zero")));
}

/// `text` parsed, or as it was parsed before on this thread.
pub(crate) fn parse(text: &str) -> Result<ParsedUrl, url::ParseError> {
    if text.len() > LONGEST_REMEMBERED {
        return parse_anew(text);
    }
    PARSED.with_borrow_mut(|parsed| {
        if let Some(known) = parsed.get(text) {
            return Ok(known.clone());
        }
        let fresh = parse_anew(text)?;
        parsed.put(text.to_owned(), fresh.clone());
        Ok(fresh)
    })
}

fn parse_anew(text: &str) -> Result<ParsedUrl, url::ParseError> {
    let url = Url::parse(text)?;
    let uri = Uri::try_from(url.as_str()).map_err(|e| e.to_string());
    Ok(ParsedUrl { url, uri })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_url_is_the_url_parsing_gives() {
        let texts = [
            "https://hooks.example.com/a?b=c#d",
            "http://127.0.0.1:18901/decisions",
            "https://BÜCHER.example/Pfad?q=1",
            "https://user:pw@hooks.example.com/",
            "https://[::1]:8443/x",
        ];
        for round in 0..3 {
            for text in texts {
                let parsed = parse(text).unwrap();
                let fresh = Url::parse(text).unwrap();
                assert_eq!(parsed.url, fresh, "round {round}: {text}");
                assert_eq!(
                    parsed.uri.as_ref().map(Uri::to_string).ok(),
                    Uri::try_from(fresh.as_str()).map(|u| u.to_string()).ok(),
                    "round {round}: {text}"
                );
            }
        }
        // An error is not remembered: asked again, the text fails again.
        assert!(parse("not a url").is_err());
        assert!(parse("not a url").is_err());
        assert!(PARSED.with_borrow(|parsed| parsed.peek("not a url").is_none()));
    }

    #[test]
    fn more_urls_than_are_remembered_still_parse_right() {
        for round in 0..2 {
            for n in 0..REMEMBERED * 2 {
                let text = format!("https://h{n}.example.com/p/{n}");
                assert_eq!(parse(&text).unwrap().url.as_str(), text, "round {round}");
            }
        }
        let long = format!(
            "https://hooks.example.com/?q={}",
            "x".repeat(LONGEST_REMEMBERED)
        );
        assert_eq!(parse(&long).unwrap().url.as_str(), long);
        assert!(PARSED.with_borrow(|parsed| parsed.peek(&long).is_none()));
    }
}
