//! Any bytes into the instruction parser: no panic, no unbounded buffering, and whatever it
//! accepts encodes back into something it accepts identically.
#![no_main]

use flowcase_guac::{MAX_INSTRUCTION_BYTES, Scan, parse, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match scan(rest) {
            Err(_) => break,
            Ok(Scan::Incomplete) => {
                // Incomplete is only ever said of a prefix a valid instruction can still fit in.
                assert!(rest.len() < MAX_INSTRUCTION_BYTES + 16);
                break;
            }
            Ok(Scan::Complete(n)) => {
                let Ok(Some((instruction, m))) = parse(rest) else {
                    panic!("scan accepted what parse refused");
                };
                assert_eq!(n, m);
                let again = instruction.encode();
                assert_eq!(parse(again.as_bytes()), Ok(Some((instruction, again.len()))));
                rest = &rest[n..];
            }
        }
    }
});
