//! Response scanner: finds where a server's reply to one command ends, without decoding
//! rows.
//!
//! The proxy forwards replies byte for byte. To know when a reply is complete (and what
//! the server status became) it walks the physical packets with a small state machine
//! and only looks at the first byte of each packet, plus the status flags of OK/EOF
//! packets. Rows are never parsed. The proxy always negotiates *without*
//! `CLIENT_DEPRECATE_EOF`, so every column block and row block ends with an EOF packet.
//!
//! ```text
//! Query:    OK | ERR | 0xFB(LOCAL INFILE) | count, col*count, EOF, row*, EOF|ERR
//!           (repeated while SERVER_MORE_RESULTS_EXISTS)
//! Execute:  OK | ERR | 0xFB(LOCAL INFILE) | count, col*count, EOF[cursor opened → done],
//!           row*, EOF|ERR (repeated)
//! Prepare:  ERR | OK(stmt, cols, params), param*params, EOF?, col*cols, EOF?
//! Fetch:    row*, EOF|ERR
//! FieldList: col*, EOF|ERR
//! Single:   exactly one packet (OK, EOF, ERR or a string)
//! ```
//! An ERR packet with code 0xFFFF is a MariaDB progress report and never ends a reply.
//!
//! A COM_STMT_EXECUTE reply stops after the column definitions only when the server
//! opened a cursor, which takes three things: the client asked for one
//! ([`Expect::Execute`]'s `cursor`, from the request's flags byte), that EOF has
//! `SERVER_STATUS_CURSOR_EXISTS`, and it lacks `SERVER_MORE_RESULTS_EXISTS`. The status
//! flag alone is not enough: a stored procedure's own cursor sets it on every result
//! set its `CALL` sends, rows and more results following, whatever the client asked
//! for (CONC-424). libmariadb checks the first two (it ignores the flag unless it asked
//! for a cursor), so a `CALL` executed with `CURSOR_TYPE_READ_ONLY` fools even it. The
//! proxy must forward everything the server sends, hence the third: MariaDB never runs
//! a `CALL` through a cursor, and every result set of a `CALL` announces more results
//! (its own OK comes last), which a statement cursor's never does.

use super::packet::{peek_header, ProtoError, Reader, HEADER, MAX_CHUNK};

pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// COM_STMT_EXECUTE flags bit that asks for a read-only cursor.
pub const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

/// What kind of reply a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Query,
    /// COM_STMT_EXECUTE or COM_STMT_BULK_EXECUTE. `cursor`: the client asked for a
    /// read-only cursor (see [`execute_requests_cursor`]).
    Execute {
        cursor: bool,
    },
    Prepare,
    Fetch,
    FieldList,
    Single,
}

impl Expect {
    /// The reply to a COM_STMT_EXECUTE or COM_STMT_BULK_EXECUTE with this payload.
    pub fn execute(payload: &[u8]) -> Expect {
        Expect::Execute {
            cursor: execute_requests_cursor(payload),
        }
    }
}

/// Whether a command payload is a COM_STMT_EXECUTE asking for a read-only cursor: the
/// flags byte after the command byte and the 4-byte statement id has
/// `CURSOR_TYPE_READ_ONLY`, the one bit MariaDB opens a cursor for. COM_STMT_BULK_EXECUTE
/// and payloads too short to hold the flags never do.
pub fn execute_requests_cursor(payload: &[u8]) -> bool {
    payload.first() == Some(&super::command::COM_STMT_EXECUTE)
        && payload
            .get(5)
            .is_some_and(|flags| flags & CURSOR_TYPE_READ_ONLY != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepParams { params: u64, cols: u64 },
    PrepParamsEof { cols: u64 },
    PrepColumns(u64),
    PrepColumnsEof,
    Done,
}

/// What the caller should do after a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The reply is not complete: forward what was consumed and read more.
    NeedMore,
    /// The reply is complete.
    Done,
    /// The server asked for a LOCAL INFILE: forward, then relay the client's file.
    LocalInfile,
}

/// Facts gathered from a reply's OK/ERR packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Server status of the last OK/EOF seen.
    pub status: Option<u16>,
    /// Error code, if the reply ended in an ERR packet.
    pub error: Option<u16>,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    /// Statement id of a successful COM_STMT_PREPARE.
    pub stmt_id: Option<u32>,
    /// Parameters of a successful COM_STMT_PREPARE.
    pub params: u16,
    /// `Rows matched: N` of an UPDATE's OK packet.
    pub info_matched: Option<u64>,
    pub warnings: u16,
    /// The reply carried a result set (a SELECT, or a write with RETURNING).
    pub result_set: bool,
    /// Rows of the reply's result sets: what a write with RETURNING changed, the one
    /// count both the leader's proxy and a follower's driver can see the same way
    /// (the proxy never asks for CLIENT_DEPRECATE_EOF, so a result set ends in an EOF
    /// packet with no affected-rows count, and `ROW_COUNT()` is -1 after it).
    pub rows: u64,
}

/// Incremental scanner over a server's reply.
#[derive(Debug, Clone)]
pub struct Scanner {
    expect: Expect,
    state: State,
    /// The previous physical packet was a full chunk, so the next one continues it.
    continuation: bool,
    pub outcome: Outcome,
}

impl Scanner {
    pub fn new(expect: Expect) -> Self {
        let state = match expect {
            Expect::Fetch => State::Rows,
            Expect::FieldList => State::Columns(u64::MAX),
            _ => State::Start,
        };
        Scanner {
            expect,
            state,
            continuation: false,
            outcome: Outcome::default(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scan whole physical packets at the start of `buf`. Returns how many bytes belong
    /// to this reply (to be forwarded) and what to do next. Stops right after the packet
    /// that completes the reply, so pipelined bytes after it are left alone.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, Step), ProtoError> {
        let mut off = 0;
        while let Some((len, _)) = peek_header(&buf[off..]) {
            if buf.len() - off < HEADER + len {
                break;
            }
            let payload = &buf[off + HEADER..off + HEADER + len];
            off += HEADER + len;
            let continued = self.continuation;
            self.continuation = len == MAX_CHUNK;
            if continued {
                continue;
            }
            if let Some(step) = self.packet(payload, len)? {
                return Ok((off, step));
            }
        }
        Ok((off, Step::NeedMore))
    }

    /// Advance over one packet. `Some(step)` when the caller must stop here.
    fn packet(&mut self, p: &[u8], len: usize) -> Result<Option<Step>, ProtoError> {
        let first = p.first().copied();
        if first == Some(0xFF) && is_progress(p) {
            return Ok(None);
        }
        if self.expect == Expect::Single {
            self.note_ok_or_err(p);
            self.state = State::Done;
            return Ok(Some(Step::Done));
        }
        let next = match (self.state, first) {
            (_, Some(0xFF)) => {
                self.note_err(p);
                State::Done
            }
            (State::Start, Some(0x00)) if self.expect == Expect::Prepare => self.prepared(p)?,
            (State::Start, Some(0x00)) => {
                let status = self.note_ok(p);
                self.after_terminator(status)
            }
            // A prepared LOAD DATA LOCAL asks for the file just like a query does.
            (State::Start, Some(0xFB))
                if matches!(self.expect, Expect::Query | Expect::Execute { .. }) =>
            {
                return Ok(Some(Step::LocalInfile));
            }
            (State::Start, _) => {
                let n = Reader::new(p)
                    .lenenc()
                    .ok_or(ProtoError::Malformed("column count"))?;
                if n == 0 {
                    return Err(ProtoError::Malformed("zero column count"));
                }
                self.outcome.result_set = true;
                State::Columns(n)
            }
            (State::Columns(_), Some(0xFE)) if is_eof(p, len) => {
                // Only COM_FIELD_LIST reaches this: its column list is open-ended.
                self.note_eof(p);
                State::Done
            }
            (State::Columns(1), _) => State::ColumnsEof,
            (State::Columns(n), _) => State::Columns(n - 1),
            (State::ColumnsEof, _) => {
                let status = self.note_eof(p);
                if self.cursor_opened(status) {
                    State::Done
                } else {
                    State::Rows
                }
            }
            (State::Rows, Some(0xFE)) if is_eof(p, len) => {
                let status = self.note_eof(p);
                if self.expect == Expect::Fetch {
                    State::Done
                } else {
                    self.after_terminator(status)
                }
            }
            (State::Rows, _) => {
                self.outcome.rows += 1;
                State::Rows
            }
            (State::PrepParams { params: 1, cols }, _) => State::PrepParamsEof { cols },
            (State::PrepParams { params, cols }, _) => State::PrepParams {
                params: params - 1,
                cols,
            },
            (State::PrepParamsEof { cols }, _) => {
                if cols > 0 {
                    State::PrepColumns(cols)
                } else {
                    State::Done
                }
            }
            (State::PrepColumns(1), _) => State::PrepColumnsEof,
            (State::PrepColumns(n), _) => State::PrepColumns(n - 1),
            (State::PrepColumnsEof, _) => State::Done,
            (State::Done, _) => return Ok(Some(Step::Done)),
        };
        self.state = next;
        Ok((next == State::Done).then_some(Step::Done))
    }

    /// After an execute's column definitions: did the server open a cursor, so that
    /// rows only come with COM_STMT_FETCH? (See the module documentation.)
    fn cursor_opened(&self, status: u16) -> bool {
        matches!(self.expect, Expect::Execute { cursor: true })
            && status & SERVER_STATUS_CURSOR_EXISTS != 0
            && status & SERVER_MORE_RESULTS_EXISTS == 0
    }

    fn after_terminator(&self, status: u16) -> State {
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            State::Start
        } else {
            State::Done
        }
    }

    fn prepared(&mut self, p: &[u8]) -> Result<State, ProtoError> {
        let mut r = Reader::new(p.get(1..).unwrap_or_default());
        let (stmt, cols, params) = r
            .u32()
            .zip(r.u16())
            .zip(r.u16())
            .map(|((s, c), p)| (s, c as u64, p as u64))
            .ok_or(ProtoError::Malformed("prepare reply"))?;
        self.outcome.stmt_id = Some(stmt);
        self.outcome.params = params as u16;
        Ok(match (params, cols) {
            (0, 0) => State::Done,
            (0, c) => State::PrepColumns(c),
            (p, c) => State::PrepParams { params: p, cols: c },
        })
    }

    fn note_ok_or_err(&mut self, p: &[u8]) {
        match p.first() {
            Some(0x00) => {
                self.note_ok(p);
            }
            Some(0xFF) => self.note_err(p),
            Some(0xFE) if p.len() < 9 => {
                self.note_eof(p);
            }
            _ => {}
        }
    }

    fn note_ok(&mut self, p: &[u8]) -> u16 {
        let mut r = Reader::new(p.get(1..).unwrap_or_default());
        let affected = r.lenenc().unwrap_or(0);
        let insert_id = r.lenenc().unwrap_or(0);
        let status = r.u16().unwrap_or(0);
        self.outcome.warnings = r.u16().unwrap_or(0);
        self.outcome.affected_rows = affected;
        self.outcome.last_insert_id = insert_id;
        self.outcome.status = Some(status);
        self.outcome.info_matched = rows_matched(r.remaining());
        status
    }

    fn note_eof(&mut self, p: &[u8]) -> u16 {
        let status = p
            .get(3..5)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .unwrap_or(0);
        self.outcome.status = Some(status);
        status
    }

    fn note_err(&mut self, p: &[u8]) {
        let code = p
            .get(1..3)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .unwrap_or(0);
        self.outcome.error = Some(code);
    }
}

/// `N` of an OK packet's `Rows matched: N …` info, which follows the warnings either
/// as the rest of the packet or (with session tracking) as a length-prefixed string.
fn rows_matched(info: &[u8]) -> Option<u64> {
    const PREFIX: &[u8] = b"Rows matched: ";
    let text = if info.starts_with(PREFIX) {
        info
    } else {
        info.get(1..).filter(|t| t.starts_with(PREFIX))?
    };
    let digits: Vec<u8> = text[PREFIX.len()..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn is_eof(p: &[u8], len: usize) -> bool {
    p.first() == Some(&0xFE) && len < 9
}

fn is_progress(p: &[u8]) -> bool {
    p.len() >= 3 && p[1] == 0xFF && p[2] == 0xFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::encode_packet;
    use bytes::BytesMut;

    fn frames(payloads: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_packet(&mut out, (i + 1) as u8, p);
        }
        out
    }

    const EOF_MORE: &[u8] = &[0xFE, 0, 0, 0x0A, 0];
    const EOF_LAST: &[u8] = &[0xFE, 0, 0, 0x02, 0];

    #[test]
    fn ok_reply() {
        let buf = frames(&[&[0x00, 1, 5, 0x03, 0x00, 0, 0]]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert_eq!(s.outcome.status, Some(3));
        assert_eq!(s.outcome.last_insert_id, 5);
    }

    #[test]
    fn result_set_then_more_results() {
        let one = frames(&[&[1], b"coldef", EOF_LAST, b"\x01a", EOF_MORE]);
        let ok = frames(&[&[0x00, 0, 0, 0x02, 0x00, 0, 0]]);
        let mut all = one.clone();
        all.extend_from_slice(&ok);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&all).unwrap(), (all.len(), Step::Done));
        // Fed in two halves: the first stops short, the second completes.
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&one).unwrap(), (one.len(), Step::NeedMore));
        assert_eq!(s.scan(&ok).unwrap(), (ok.len(), Step::Done));
    }

    #[test]
    fn rows_of_a_result_set_are_counted() {
        // Three rows, one of which starts with 0xFE yet is no EOF (9 bytes long).
        let long_fe: &[u8] = &[0xFE, 1, 2, 3, 4, 5, 6, 7, 8];
        let buf = frames(&[
            &[1],
            b"coldef",
            EOF_LAST,
            b"\x01a",
            long_fe,
            b"\x01b",
            EOF_LAST,
        ]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert!(s.outcome.result_set);
        assert_eq!(s.outcome.rows, 3);
        let ok = frames(&[&[0x00, 2, 0, 0x02, 0x00, 0, 0]]);
        let mut s = Scanner::new(Expect::Query);
        s.scan(&ok).unwrap();
        assert!(!s.outcome.result_set);
        assert_eq!((s.outcome.rows, s.outcome.affected_rows), (0, 2));
    }

    #[test]
    fn partial_packet_is_not_consumed() {
        let buf = frames(&[&[1], b"coldef"]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf[..buf.len() - 2]).unwrap(), (5, Step::NeedMore));
    }

    #[test]
    fn pipelined_bytes_are_left_alone() {
        let mut buf = frames(&[&[0x00, 0, 0, 2, 0, 0, 0]]);
        let first = buf.len();
        buf.extend_from_slice(&frames(&[&[0x00, 0, 0, 2, 0, 0, 0]]));
        assert_eq!(
            Scanner::new(Expect::Query).scan(&buf).unwrap(),
            (first, Step::Done)
        );
    }

    #[test]
    fn cursor_execute_ends_after_columns() {
        let buf = frames(&[&[1], b"coldef", &[0xFE, 0, 0, 0x42, 0]]);
        let mut s = Scanner::new(Expect::Execute { cursor: true });
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
    }

    // Replies captured from MariaDB 10.11 (no CLIENT_DEPRECATE_EOF) to COM_STMT_EXECUTE.
    // t1 holds the rows 1 and 2.

    /// Column definition of `v_a` (INT) as sent for p1's `SELECT v_a`.
    const COL_V_A: &[u8] =
        b"\x03def\x00\x00\x00\x03v_a\x03v_a\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00";
    /// Column definition of `t1.a` (INT).
    const COL_A: &[u8] =
        b"\x03def\x03cap\x02t1\x02t1\x01a\x01a\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00";
    const ROW_1: &[u8] = &[0, 0, 1, 0, 0, 0];
    const ROW_2: &[u8] = &[0, 0, 2, 0, 0, 0];

    /// `CALL p1(1)`: p1 opens a cursor over t1, fetches it in a loop and `SELECT`s each
    /// value (MariaDB's main.sp-cursor). Every EOF carries 0x006A: CURSOR_EXISTS (the
    /// procedure's cursor), MORE_RESULTS, AUTOCOMMIT, NO_INDEX_USED. MariaDB sends the
    /// same bytes with flags 0 and with CURSOR_TYPE_READ_ONLY.
    fn call_p1() -> BytesMut {
        const EOF_6A: &[u8] = &[0xFE, 0, 0, 0x6A, 0];
        frames(&[
            &[1],
            COL_V_A,
            EOF_6A,
            ROW_1,
            EOF_6A,
            &[1],
            COL_V_A,
            EOF_6A,
            ROW_1,
            EOF_6A,
            &[0x00, 0, 0, 0x22, 0, 0, 0],
        ])
    }

    #[test]
    fn call_with_procedure_cursor_is_read_to_the_end() {
        let buf = call_p1();
        for cursor in [false, true] {
            let mut s = Scanner::new(Expect::Execute { cursor });
            assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done), "{cursor}");
            assert_eq!(s.outcome.status, Some(0x22));
            // Fed packet by packet, nothing before the final OK completes it.
            let mut s = Scanner::new(Expect::Execute { cursor });
            let mut off = 0;
            while off < buf.len() {
                let len = HEADER + peek_header(&buf[off..]).unwrap().0;
                let (n, step) = s.scan(&buf[off..off + len]).unwrap();
                off += n;
                assert_eq!(step == Step::Done, off == buf.len(), "{cursor} at {off}");
            }
        }
    }

    #[test]
    fn call_without_procedure_cursor() {
        // `CALL p2()`, p2 being `SELECT a FROM t1`: 0x002A, no cursor flag.
        const EOF_2A: &[u8] = &[0xFE, 0, 0, 0x2A, 0];
        let ok: &[u8] = &[0x00, 0, 0, 0x22, 0, 0, 0];
        let buf = frames(&[&[1], COL_A, EOF_2A, ROW_1, ROW_2, EOF_2A, ok]);
        for cursor in [false, true] {
            let mut s = Scanner::new(Expect::Execute { cursor });
            assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done), "{cursor}");
        }
    }

    #[test]
    fn prepared_select_opens_a_cursor_only_when_asked() {
        // `SELECT a FROM t1` with CURSOR_TYPE_READ_ONLY: 0x0062, columns only.
        let cursor = frames(&[&[1], COL_A, &[0xFE, 0, 0, 0x62, 0]]);
        let mut s = Scanner::new(Expect::Execute { cursor: true });
        assert_eq!(s.scan(&cursor).unwrap(), (cursor.len(), Step::Done));
        assert_eq!(s.outcome.status, Some(0x62));
        // Flags 0: 0x0022 and the rows.
        const EOF_22: &[u8] = &[0xFE, 0, 0, 0x22, 0];
        let rows = frames(&[&[1], COL_A, EOF_22, ROW_1, ROW_2, EOF_22]);
        let mut s = Scanner::new(Expect::Execute { cursor: false });
        assert_eq!(s.scan(&rows).unwrap(), (rows.len(), Step::Done));
        // A cursor flag the client did not ask for never ends the reply.
        let mut s = Scanner::new(Expect::Execute { cursor: false });
        assert_eq!(s.scan(&cursor).unwrap(), (cursor.len(), Step::NeedMore));
    }

    #[test]
    fn cursor_flag_in_text_results_is_ignored() {
        let buf = frames(&[&[1], COL_V_A, &[0xFE, 0, 0, 0x42, 0]]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::NeedMore));
    }

    #[test]
    fn execute_flags_byte() {
        let exec = |flags: u8| [0x17, 1, 0, 0, 0, flags, 1, 0, 0, 0];
        assert!(!execute_requests_cursor(&exec(0)));
        assert!(execute_requests_cursor(&exec(1)));
        assert!(!execute_requests_cursor(&exec(2))); // CURSOR_TYPE_FOR_UPDATE alone
        assert!(!execute_requests_cursor(&exec(4))); // CURSOR_TYPE_SCROLLABLE alone
        assert!(execute_requests_cursor(&exec(5)));
        assert_eq!(Expect::execute(&exec(1)), Expect::Execute { cursor: true });
        assert_eq!(Expect::execute(&exec(0)), Expect::Execute { cursor: false });
        // COM_STMT_BULK_EXECUTE: the same offset holds bulk flags, never a cursor.
        let bulk = [0xFA, 1, 0, 0, 0, 0x81, 0];
        assert!(!execute_requests_cursor(&bulk));
        assert_eq!(Expect::execute(&bulk), Expect::Execute { cursor: false });
        for short in [&[][..], &[0x17], &[0x17, 1, 0, 0, 0]] {
            assert!(!execute_requests_cursor(short), "{short:?}");
        }
    }

    #[test]
    fn prepare_with_params_and_columns() {
        let ok: &[u8] = &[0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let buf = frames(&[ok, b"p1", b"p2", EOF_LAST, b"c1", EOF_LAST]);
        let mut s = Scanner::new(Expect::Prepare);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert_eq!(s.outcome.stmt_id, Some(7));
    }

    #[test]
    fn local_infile_request_stops_scan() {
        let buf = frames(&[b"\xFB/tmp/x.csv"]);
        assert_eq!(
            Scanner::new(Expect::Query).scan(&buf).unwrap(),
            (buf.len(), Step::LocalInfile)
        );
    }

    #[test]
    fn local_infile_request_of_an_execute() {
        let mut buf = frames(&[b"\xFBx.csv"]);
        let mut s = Scanner::new(Expect::Execute { cursor: false });
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::LocalInfile));
        // After the file, the server's OK ends the reply.
        buf = frames(&[&[0x00, 2, 0, 0x02, 0, 0, 0]]);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert_eq!(s.outcome.affected_rows, 2);
    }

    #[test]
    fn progress_report_is_not_an_error() {
        let buf = frames(&[&[0xFF, 0xFF, 0xFF, 1, 1, 2], &[0x00, 0, 0, 2, 0, 0, 0]]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert_eq!(s.outcome.error, None);
    }

    #[test]
    fn large_row_is_not_mistaken_for_eof() {
        // A row whose first chunk is full and starts with 0xFE (an 8-byte length prefix).
        let mut row = vec![0u8; MAX_CHUNK + 3];
        row[0] = 0xFE;
        let mut buf = frames(&[&[1], b"coldef", EOF_LAST]);
        encode_packet(&mut buf, 4, &row);
        buf.extend_from_slice(&frames(&[EOF_LAST]));
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
    }

    #[test]
    fn error_in_rows_ends_reply() {
        let buf = frames(&[
            &[1],
            b"coldef",
            EOF_LAST,
            b"\x01a",
            b"\xFF\x25\x05#HY000boom",
        ]);
        let mut s = Scanner::new(Expect::Query);
        assert_eq!(s.scan(&buf).unwrap(), (buf.len(), Step::Done));
        assert_eq!(s.outcome.error, Some(1317));
    }
}
