//! The SQL classifier on arbitrary text (lossily decoded, as the proxy does).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let c = wolfscale::sql::classify(&text);
    let _ = c.to_string();
    let _ = wolfscale::sql::classify_each(&text);
});
