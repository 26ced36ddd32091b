//! DES encryption of one 64-bit block (FIPS 46-3), as far as VNC authentication needs it: the
//! obfuscated VNC password file and the VncAuth challenge response. VNC feeds key bytes to DES
//! with their bit order reversed; [`vnc_key`] does that.
//!
//! Std-only on purpose: the test HTTP server that writes the password file inside a FROM-scratch
//! image must not grow dependencies, and no `vncpasswd` is installed on the test machines.

const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14, 6,
    64, 56, 48, 40, 32, 24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, 61,
    53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];
const FP: [u8; 64] = [
    40, 8, 48, 16, 56, 24, 64, 32, 39, 7, 47, 15, 55, 23, 63, 31, 38, 6, 46, 14, 54, 22, 62, 30,
    37, 5, 45, 13, 53, 21, 61, 29, 36, 4, 44, 12, 52, 20, 60, 28, 35, 3, 43, 11, 51, 19, 59, 27,
    34, 2, 42, 10, 50, 18, 58, 26, 33, 1, 41, 9, 49, 17, 57, 25,
];
const E: [u8; 48] = [
    32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17, 16, 17, 18,
    19, 20, 21, 20, 21, 22, 23, 24, 25, 24, 25, 26, 27, 28, 29, 28, 29, 30, 31, 32, 1,
];
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, 2, 8, 24, 14, 32, 27, 3, 9, 19,
    13, 30, 6, 22, 11, 4, 25,
];
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60,
    52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29,
    21, 13, 5, 28, 20, 12, 4,
];
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, 41, 52,
    31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];
const SHIFTS: [u32; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];
const S: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12,
        11, 9, 5, 3, 8, 4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, 15, 12, 8, 2, 4, 9,
        1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1,
        10, 6, 9, 11, 5, 0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, 13, 8, 10, 1, 3, 15,
        4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5,
        14, 12, 11, 15, 1, 13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, 1, 10, 13, 0, 6,
        9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2,
        12, 1, 10, 14, 9, 10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, 3, 15, 0, 6, 10, 1,
        13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15,
        10, 3, 9, 8, 6, 4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, 11, 8, 12, 7, 1, 14,
        2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13,
        14, 0, 11, 3, 8, 9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, 4, 3, 2, 12, 9, 5,
        15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5,
        12, 2, 15, 8, 6, 1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, 6, 11, 13, 8, 1, 4,
        10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6,
        11, 0, 14, 9, 2, 7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, 2, 1, 14, 7, 4, 10,
        8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// The fixed key every VNC implementation obfuscates stored passwords with.
const VNC_FIXED_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];

/// Picks bits of `input` (`width` bits wide, numbered 1.. from the most significant) in the
/// order `table` lists them.
fn permute(input: u64, width: u32, table: &[u8]) -> u64 {
    table.iter().fold(0u64, |out, &pos| {
        (out << 1) | ((input >> (width - u32::from(pos))) & 1)
    })
}

fn subkeys(key: [u8; 8]) -> [u64; 16] {
    let key = permute(u64::from_be_bytes(key), 64, &PC1);
    let (mut c, mut d) = ((key >> 28) & 0x0fff_ffff, key & 0x0fff_ffff);
    let mut out = [0u64; 16];
    for (round, shift) in SHIFTS.iter().enumerate() {
        c = ((c << shift) | (c >> (28 - shift))) & 0x0fff_ffff;
        d = ((d << shift) | (d >> (28 - shift))) & 0x0fff_ffff;
        out[round] = permute((c << 28) | d, 56, &PC2);
    }
    out
}

fn feistel(right: u32, subkey: u64) -> u32 {
    let x = permute(u64::from(right), 32, &E) ^ subkey;
    let mut out = 0u32;
    for (i, sbox) in S.iter().enumerate() {
        let six = ((x >> (42 - 6 * i)) & 0x3f) as usize;
        let row = ((six & 0x20) >> 4) | (six & 1);
        let col = (six >> 1) & 0x0f;
        out = (out << 4) | u32::from(sbox[row * 16 + col]);
    }
    permute(u64::from(out), 32, &P) as u32
}

/// Encrypts one block with a standard DES key.
pub fn encrypt_block(key: [u8; 8], block: [u8; 8]) -> [u8; 8] {
    let keys = subkeys(key);
    let x = permute(u64::from_be_bytes(block), 64, &IP);
    let (mut left, mut right) = ((x >> 32) as u32, x as u32);
    for subkey in keys {
        let next = left ^ feistel(right, subkey);
        left = right;
        right = next;
    }
    let preout = (u64::from(right) << 32) | u64::from(left);
    permute(preout, 64, &FP).to_be_bytes()
}

/// A VNC password (first 8 bytes, zero-padded) as the DES key VNC derives from it.
pub fn vnc_key(password: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    key
}

/// The 8 bytes of a VNC password file (`vncpasswd -f`) for `password`.
pub fn vnc_obfuscate(password: &[u8]) -> [u8; 8] {
    let mut plain = [0u8; 8];
    for (p, b) in plain.iter_mut().zip(password) {
        *p = *b;
    }
    encrypt_block(vnc_key(&VNC_FIXED_KEY), plain)
}

/// The client's answer to a VncAuth challenge.
pub fn vnc_auth_response(password: &[u8], challenge: [u8; 16]) -> [u8; 16] {
    let key = vnc_key(password);
    let mut out = [0u8; 16];
    for (half, chunk) in challenge.chunks_exact(8).enumerate() {
        let mut block = [0u8; 8];
        block.copy_from_slice(chunk);
        out[half * 8..half * 8 + 8].copy_from_slice(&encrypt_block(key, block));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // The worked example of J. Orlin Grabbe's "The DES Algorithm Illustrated".
        let key = 0x1334_5779_9BBC_DFF1u64.to_be_bytes();
        let plain = 0x0123_4567_89AB_CDEFu64.to_be_bytes();
        assert_eq!(
            u64::from_be_bytes(encrypt_block(key, plain)),
            0x85E8_1354_0F0A_B405
        );
    }

    #[test]
    fn vnc_fixed_key_is_the_well_known_one() {
        assert_eq!(
            u64::from_be_bytes(vnc_key(&VNC_FIXED_KEY)),
            0xE84A_D660_C472_1AE0
        );
    }
}
