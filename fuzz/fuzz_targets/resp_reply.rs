//! Replies from a store: `check`, `parse` and the streaming `Scanner` must
//! agree on every input, whatever the chunking, and never panic.
#![no_main]

use custos_parsers::resp::{self, Limits, Scanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::reply();
    let checked = resp::check(data, &limits);
    let parsed = resp::parse(data, &limits);
    match (&checked, &parsed) {
        (Ok(Some(n)), Ok(Some((_, m)))) => assert_eq!(n, m),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("check and parse disagree: {checked:?} vs {:?}", parsed.as_ref().map(|p| p.as_ref().map(|x| x.1))),
    }
    // Feed the scanner in pieces sized by the first byte.
    let step = data.first().map_or(1, |b| (*b as usize % 7) + 1);
    let mut scanner = Scanner::new(limits);
    let mut pos = 0;
    let mut end = step.min(data.len());
    while pos < data.len() {
        match scanner.scan(&data[pos..end]) {
            Ok(s) => {
                pos += s.consumed;
                if s.complete {
                    if let Ok(Some(n)) = checked {
                        assert_eq!(pos, n, "scanner and check disagree on the frame end");
                    }
                    break;
                }
                if end == data.len() {
                    break;
                }
                end = (end + step).min(data.len());
            }
            Err(_) => break,
        }
    }
});
