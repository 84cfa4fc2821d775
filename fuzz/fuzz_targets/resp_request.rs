//! Client commands: `command_head`, the request `Scanner` and
//! `split_inline` never panic, and a head never points outside the input.
#![no_main]

use custos_parsers::resp::{self, HeadStatus, Limits, Scanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::request();
    match resp::command_head(data, &limits) {
        Ok(HeadStatus::Multibulk(h)) => {
            for a in &h.args[..h.captured] {
                assert!(a.end <= data.len() && a.start <= a.end);
            }
        }
        Ok(HeadStatus::Inline { line, len }) => {
            assert!(line.end <= len && len <= data.len());
            let _ = resp::split_inline(line.slice(data));
        }
        _ => {}
    }
    let mut scanner = Scanner::request(limits);
    let _ = scanner.scan(data);
});
