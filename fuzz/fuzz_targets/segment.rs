//! The WAL segment reader on arbitrary file contents: header, frames, torn-tail
//! detection, decompression and entry decoding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wolfscale::wal::format::Batch;
use wolfscale::wal::segment;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    if let Ok(scan) = segment::scan(&data) {
        for loc in &scan.batches {
            let end = (loc.offset + loc.len as u64) as usize;
            if let Some(frame) = data.get(loc.offset as usize..end) {
                let batch = Batch::from_frame(Bytes::copy_from_slice(frame)).expect("scan verified it");
                let _ = batch.entries();
            }
        }
    }
    // Frames on their own, without a segment header.
    let _ = Batch::from_frame(data.clone()).map(|b| b.entries());
});
