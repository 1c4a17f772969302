// Package tun owns the link layer of umptcp: Linux TUN devices exposed as
// gVisor link endpoints, in-process emulated links (NewPipe) with rate,
// delay, jitter, loss and blackholing, and pcap capture of any link endpoint.
//
// The package knows nothing about MPTCP; it moves IP packets.
package tun
