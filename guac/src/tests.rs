#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

#[test]
fn round_trip_with_multibyte_values() {
    let i = Instruction::new("clipboard", ["é€😀", "", "a,b;c.d"]);
    let wire = i.encode();
    assert_eq!(wire, "9.clipboard,3.é€😀,0.,7.a,b;c.d;");
    assert_eq!(scan(wire.as_bytes()), Ok(Scan::Complete(wire.len())));
    assert_eq!(parse(wire.as_bytes()), Ok(Some((i, wire.len()))));
}

#[test]
fn lengths_count_code_points_not_bytes_nor_utf16_units() {
    // U+1F600 is 4 bytes and 2 UTF-16 units but one code point.
    assert!(matches!(
        scan("3.key,1.😀;".as_bytes()),
        Ok(Scan::Complete(_))
    ));
    assert_eq!(
        scan("3.key,2.😀;".as_bytes()),
        Ok(Scan::Incomplete),
        "waits for a second code point"
    );
    assert_eq!(
        scan("3.key,4.😀;".as_bytes()),
        Ok(Scan::Incomplete),
        "a byte count would be complete here"
    );
}

#[test]
fn every_prefix_is_incomplete_and_the_rest_stays_in_the_buffer() {
    let wire = "4.size,1.0,4.1024,3.768;3.nop;".as_bytes();
    let first = "4.size,1.0,4.1024,3.768;".len();
    for cut in 0..first {
        assert_eq!(scan(&wire[..cut]), Ok(Scan::Incomplete), "cut at {cut}");
    }
    assert_eq!(scan(wire), Ok(Scan::Complete(first)));
    let (next, n) = parse(&wire[first..]).unwrap().unwrap();
    assert_eq!((next.opcode.as_str(), n), ("nop", 6));
    // A multi-byte character cut anywhere is incomplete, not an error.
    let emoji = "5.hello,1.😀;".as_bytes();
    for cut in 0..emoji.len() {
        assert_eq!(scan(&emoji[..cut]), Ok(Scan::Incomplete), "cut at {cut}");
    }
}

#[test]
fn the_internal_ping_and_empty_opcode() {
    let (i, _) = parse(b"0.,4.ping,13.1700000000000;").unwrap().unwrap();
    assert_eq!(i.opcode, "");
    assert_eq!(i.args, ["ping", "1700000000000"]);
    assert_eq!(opcode(b"0.,4.ping,13.1700000000000;"), b"");
    assert_eq!(opcode(b"5.mouse,1.1,1.2,1.0;"), b"mouse");
    assert_eq!(opcode("3.é€x,0.;".as_bytes()), "é€x".as_bytes());
}

#[test]
fn limits_are_enforced() {
    // 5 digits are fine, 6 are not, even for a zero.
    assert_eq!(scan(b"00003.abc;"), Ok(Scan::Complete(10)));
    assert_eq!(scan(b"000003.abc;"), Err(ParseError::LengthTooLong));
    // 8192 code points in all is the most.
    let value = "x".repeat(MAX_INSTRUCTION_CHARS - "1.a,".len() - "8182.".len() - ";".len());
    let at_limit = format!("1.a,{}.{value};", value.len());
    assert_eq!(at_limit.chars().count(), MAX_INSTRUCTION_CHARS);
    assert!(matches!(scan(at_limit.as_bytes()), Ok(Scan::Complete(_))));
    let over = format!("1.a,{}.{value}x;", value.len() + 1);
    assert_eq!(scan(over.as_bytes()), Err(ParseError::TooLong));
    // Refused from the length alone: no need to buffer the value first.
    assert_eq!(scan(b"1.a,99999."), Err(ParseError::TooLong));
    // 128 elements are the most.
    let args = vec!["0."; MAX_ELEMENTS - 1].join(",");
    assert!(matches!(
        scan(format!("1.a,{args};").as_bytes()),
        Ok(Scan::Complete(_))
    ));
    assert_eq!(
        scan(format!("1.a,{args},0.;").as_bytes()),
        Err(ParseError::TooManyElements)
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    for bad in [
        &b"x.abc;"[..],
        b".abc;",
        b"3abc;",
        b"-1.a;",
        b"3.abc:",
        b"3.abc,,",
        b"1.\xff;",
        b"1.\xc3\x28;",
        b"1.\xed\xa0\x80;", // a UTF-16 surrogate
        b"1.\xc0\xaf;",     // an overlong encoding
        b"2.\xe2\x82x;",
    ] {
        assert!(scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        assert!(parse(bad).is_err());
    }
}

#[test]
fn versions() {
    assert_eq!(Version::parse("VERSION_1_5_0"), Some(Version::V1_5_0));
    assert_eq!(Version::parse("VERSION_1_6_0"), Some(Version(1, 6, 0)));
    assert_eq!(Version::parse("VERSION_1_5"), None);
    assert_eq!(Version::parse("hostname"), None);
    assert_eq!(Version::V1_5_0.to_string(), "VERSION_1_5_0");
    assert!(Version(1, 6, 0).min(Version::V1_5_0) == Version::V1_5_0);
}

#[test]
fn statuses_and_close_codes_follow_the_table() {
    assert_eq!(Status::ClientUnauthorized.code(), 769);
    assert_eq!(Status::ClientUnauthorized.websocket_close_code(), 1008);
    assert_eq!(Status::SessionClosed.code(), 523);
    assert_eq!(Status::SessionClosed.websocket_close_code(), 1002);
    assert_eq!(Status::UpstreamNotFound.code(), 519);
    assert_eq!(Status::ClientOverrun.websocket_close_code(), 1009);
    assert_eq!(Status::from_code(0x0301), Status::ClientUnauthorized);
    assert_eq!(Status::from_code(0x03FE), Status::ClientBadRequest);
    assert_eq!(Status::from_code(0x0299), Status::ServerError);
}

/// The fuzzer's seed corpus (`guac/fuzz/corpus/instruction`) goes through the parser here on
/// every test run: each seed either parses into instructions that parse the same
/// again after encoding, or is refused — never a panic.
#[test]
fn the_seed_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/instruction");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut rest = &bytes[..];
        while let Ok(Some((instruction, n))) = parse(rest) {
            let again = instruction.encode();
            assert_eq!(
                parse(again.as_bytes()),
                Ok(Some((instruction, again.len())))
            );
            rest = &rest[n..];
        }
        seen += 1;
    }
    assert!(
        seen >= 5,
        "the seed corpus is missing from {}",
        dir.display()
    );
}
