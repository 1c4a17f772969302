// Package hostile is a test rig for hostile peers: it watches the TCP
// flows between an umptcp stack and its peer and injects crafted segments
// into them while they carry data.
//
// A Tap is a gVisor link endpoint put between a link (a TUN device's, an
// emulated pipe's) and the stack above it. It sees every packet both ways
// and learns each TCP flow from the wire (Flow): the 4-tuple, each side's
// ISN, highest sequence number sent, latest ACK, window and timestamps, and
// the MPTCP state its options reveal (keys, latest DSS mapping and
// DATA_ACK, address IDs). Learning uses the project's own option parser,
// so the rig sees exactly what the stack's option layer would parse.
//
// Segments are built from a learnt Flow (Flow.Build) for one direction
// (FromPeer: as if the peer sent it; FromStack: as if our stack sent it)
// with chosen flags, payload and options (MPTCP options come from the
// option package's Append methods) at a Placement: in the receiver's
// window, far outside it, in window with a wrong TCP checksum, or in
// window acknowledging data the receiver never sent. Tap.ToStack hands a
// built packet to the stack exactly as the link would have delivered it;
// Tap.ToPeer writes one into the link, so the peer (e.g. the Linux kernel
// behind a TUN device) receives it as if our stack had sent it, to compare
// how Linux takes the same spoof.
//
// Memory is bounded: a Tap keeps at most MaxFlows flows, forgetting the one
// seen least recently.
package hostile
