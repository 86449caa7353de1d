//! The WAL segment reader on arbitrary file contents: header, frames, the zero tail,
//! torn-tail detection, decompression and entry decoding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wolfscale::wal::format::Batch;
use wolfscale::wal::segment;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    if let Ok(scan) = segment::scan(&data) {
        assert!(scan.valid_len <= data.len() as u64);
        for loc in &scan.batches {
            let end = (loc.offset + loc.len as u64) as usize;
            if let Some(frame) = data.get(loc.offset as usize..end) {
                let batch = Batch::from_frame(Bytes::copy_from_slice(frame)).expect("scan verified it");
                let _ = batch.entries();
            }
        }
        match &scan.damage {
            // Only zeros follow the valid frames: a preallocated tail of any length
            // reads the same, as the normal end of the data.
            None => {
                assert_eq!(
                    segment::nonzero_len(&data[scan.valid_len as usize..]),
                    0,
                    "non-zero bytes after the data without damage"
                );
                let mut longer = data.to_vec();
                longer.resize(data.len() + 4096, 0);
                let again = segment::scan(&longer).expect("same header");
                assert_eq!(again.batches, scan.batches);
                assert_eq!(again.valid_len, scan.valid_len);
                assert!(again.damage.is_none());
            }
            Some(d) => {
                assert!(d.offset < d.end && d.end <= data.len() as u64);
                assert_eq!(segment::nonzero_len(&data[d.end as usize..]), 0);
            }
        }
    }
    // Frames on their own, without a segment header.
    let _ = Batch::from_frame(data.clone()).map(|b| b.entries());
});
