//! IPVS-style TCP connection state tracking (the `tcp_states` table of ip_vs_proto_tcp.c).
//!
//! A FULLNAT or NAT director sees both directions, so it uses the INPUT (client → real server)
//! and OUTPUT (real server → client) parts of the table. DR and TUN sessions only ever see the
//! client's segments (replies bypass the director): they use the INPUT-ONLY part, as IPVS does for
//! connections flagged `IP_VS_CONN_F_NOOUTPUT` (`TCP_DIR_INPUT_ONLY`). It differs from INPUT in
//! that a client FIN in ESTABLISHED goes to FIN_WAIT (not CLOSE_WAIT), a FIN in FIN_WAIT stays
//! there, and a client RST in SYNACK closes. The flags of a segment select one row with the
//! priority RST > SYN > FIN > ACK; a segment with none of them changes nothing.

use crate::config::Timeouts;

/// TCP session state (IPVS's `IP_VS_TCP_S_*`, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No state yet.
    None = 0,
    /// Handshake completed.
    Established = 1,
    /// SYN seen from the real server side.
    SynSent = 2,
    /// SYN seen from the client.
    SynRecv = 3,
    /// FIN seen from the real server.
    FinWait = 4,
    /// Both FINs seen.
    TimeWait = 5,
    /// Closed (RST, or FIN before establishment).
    Close = 6,
    /// FIN seen from the client.
    CloseWait = 7,
    /// Last ACK pending.
    LastAck = 8,
    /// Listen.
    Listen = 9,
    /// SYN-ACK (SYN-proxy; unused by the plain table).
    SynAck = 10,
}

/// Direction of a segment relative to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client → real server (received on the VIP).
    Input,
    /// Real server → client (received on the LIP, or as a NAT reply).
    Output,
    /// Client → real server on a session whose replies are never seen (DR, TUN).
    InputOnly,
}

impl TcpState {
    /// Every state, indexed by its `u8` value.
    pub const ALL: [TcpState; 11] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The state with value `v` (unknown values map to `Close`).
    #[inline]
    pub fn from_u8(v: u8) -> TcpState {
        *Self::ALL.get(v as usize).unwrap_or(&TcpState::Close)
    }

    /// IPVS's name of the state.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// Whether a session in this state counts as an active connection of its real server
    /// (ipvsadm's ActiveConn, what lc/wlc/sed/nq and the thresholds weigh): the handshake and
    /// ESTABLISHED, as IPVS since Linux 4.8 (`tcp_state_active_table`), so that SYNs a real
    /// server leaves unanswered weigh on it like connections, not 256 times less.
    #[inline]
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }

    /// Timeout of a session in this state.
    pub fn timeout_ms(self, t: &Timeouts) -> u64 {
        match self {
            TcpState::None => t.tcp_none,
            TcpState::Established => t.tcp_established,
            TcpState::SynSent => t.tcp_syn_sent,
            TcpState::SynRecv => t.tcp_syn_recv,
            TcpState::FinWait => t.tcp_fin_wait,
            TcpState::TimeWait => t.tcp_time_wait,
            TcpState::Close => t.tcp_close,
            TcpState::CloseWait => t.tcp_close_wait,
            TcpState::LastAck => t.tcp_last_ack,
            TcpState::Listen => t.tcp_listen,
            TcpState::SynAck => t.tcp_synack,
        }
    }

    /// Next state after a segment with TCP `flags` (the header's flag byte) in direction `dir`.
    #[inline]
    pub fn next(self, dir: Dir, flags: u8) -> TcpState {
        let Some(row) = flag_row(flags) else {
            return self;
        };
        let half = match dir {
            Dir::Input => 0,
            Dir::Output => 4,
            Dir::InputOnly => 8,
        };
        TCP_STATES[half + row][self as usize]
    }
}

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Row of the table for `flags` (IPVS's `tcp_state_idx`): RST > SYN > FIN > ACK.
#[inline]
fn flag_row(f: u8) -> Option<usize> {
    if f & flags::RST != 0 {
        Some(3)
    } else if f & flags::SYN != 0 {
        Some(0)
    } else if f & flags::FIN != 0 {
        Some(1)
    } else if f & flags::ACK != 0 {
        Some(2)
    } else {
        None
    }
}

use TcpState::{
    Close as SCL, CloseWait as SCW, Established as SES, FinWait as SFW, LastAck as SLA,
    Listen as SLI, SynRecv as SSR, SynSent as SSS, TimeWait as STW,
};

/// IPVS `tcp_states`, INPUT, OUTPUT then INPUT-ONLY; rows syn, fin, ack, rst; columns
/// sNO sES sSS sSR sFW sTW sCL sCW sLA sLI sSA.
#[rustfmt::skip]
const TCP_STATES: [[TcpState; 11]; 12] = [
    // INPUT
    /*syn*/ [SSR, SES, SES, SSR, SSR, SSR, SSR, SSR, SSR, SSR, SSR],
    /*fin*/ [SCL, SCW, SSS, STW, STW, STW, SCL, SCW, SLA, SLI, STW],
    /*ack*/ [SCL, SES, SSS, SES, SFW, STW, SCL, SCW, SCL, SLI, SES],
    /*rst*/ [SCL, SCL, SCL, SSR, SCL, SCL, SCL, SCL, SLA, SLI, SSR],
    // OUTPUT
    /*syn*/ [SSS, SES, SSS, SSR, SSS, SSS, SSS, SSS, SSS, SLI, SSR],
    /*fin*/ [STW, SFW, SSS, STW, SFW, STW, SCL, STW, SLA, SLI, STW],
    /*ack*/ [SES, SES, SSS, SES, SFW, STW, SCL, SCW, SLA, SES, SES],
    /*rst*/ [SCL, SCL, SSS, SCL, SCL, STW, SCL, SCL, SCL, SCL, SCL],
    // INPUT-ONLY
    /*syn*/ [SSR, SES, SES, SSR, SSR, SSR, SSR, SSR, SSR, SSR, SSR],
    /*fin*/ [SCL, SFW, SSS, STW, SFW, STW, SCL, SCW, SLA, SLI, STW],
    /*ack*/ [SCL, SES, SSS, SES, SFW, STW, SCL, SCW, SCL, SLI, SES],
    /*rst*/ [SCL, SCL, SCL, SSR, SCL, SCL, SCL, SCL, SLA, SLI, SCL],
];

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    #[test]
    fn established_stays_established_without_syn_fin_rst() {
        // `fnat_track`'s established shortcut skips the table on exactly these segments.
        for dir in [Dir::Input, Dir::Output, Dir::InputOnly] {
            for f in (0..=255u8).filter(|f| f & (SYN | FIN | RST) == 0) {
                assert_eq!(TcpState::Established.next(dir, f), TcpState::Established);
            }
        }
    }

    #[test]
    fn handshake_and_close() {
        let s = TcpState::None.next(Dir::Input, SYN);
        assert_eq!(s, TcpState::SynRecv);
        let s = s.next(Dir::Output, SYN | ACK);
        assert_eq!(s, TcpState::SynRecv);
        let s = s.next(Dir::Input, ACK);
        assert_eq!(s, TcpState::Established);
        assert_eq!(s.next(Dir::Input, FIN | ACK), TcpState::CloseWait);
        assert_eq!(s.next(Dir::Output, FIN | ACK), TcpState::FinWait);
        assert_eq!(
            s.next(Dir::Output, FIN | ACK).next(Dir::Input, FIN | ACK),
            TcpState::TimeWait
        );
        assert_eq!(s.next(Dir::Input, RST | ACK), TcpState::Close);
        assert_eq!(s.next(Dir::Input, 0), TcpState::Established);
        // INPUT ack from NONE closes (IPVS).
        assert_eq!(TcpState::None.next(Dir::Input, ACK), TcpState::Close);
        // RST in SYN_RECV from the client keeps SYN_RECV (IPVS).
        assert_eq!(TcpState::SynRecv.next(Dir::Input, RST), TcpState::SynRecv);
        assert_eq!(TcpState::SynRecv.next(Dir::Output, RST), TcpState::Close);
        let t = Timeouts::default();
        assert_eq!(TcpState::Established.timeout_ms(&t), 900_000);
        assert_eq!(TcpState::None.timeout_ms(&t), 2_000);
        // INPUT-ONLY (DR/TUN): the client's handshake and close alone drive the state.
        let io = Dir::InputOnly;
        let s = TcpState::None.next(io, SYN);
        assert_eq!(s, TcpState::SynRecv);
        let s = s.next(io, ACK);
        assert_eq!(s, TcpState::Established);
        assert_eq!(s.next(io, ACK | 0x08), TcpState::Established);
        let s = s.next(io, FIN | ACK);
        assert_eq!(s, TcpState::FinWait);
        assert_eq!(s.next(io, FIN | ACK), TcpState::FinWait);
        assert_eq!(s.next(io, ACK), TcpState::FinWait);
        assert_eq!(s.next(io, RST), TcpState::Close);
        assert_eq!(TcpState::None.next(io, ACK), TcpState::Close);
        assert_eq!(TcpState::SynRecv.next(io, RST), TcpState::SynRecv);
        assert_eq!(TcpState::SynAck.next(io, RST), TcpState::Close);
        assert_eq!(TcpState::SynAck.next(Dir::Input, RST), TcpState::SynRecv);
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(TcpState::from_u8(i as u8), *s);
        }
    }
}
