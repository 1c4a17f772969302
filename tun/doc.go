// Package tun owns the link layer of umptcp: Linux TUN devices exposed as
// gVisor link endpoints, in-process emulated links (NewPipe) with rate,
// delay, jitter, loss, duplication and blackholing, and pcap capture of any
// link endpoint.
//
// The same emulation (LinkParams, one time-ordered queue and one delivery
// goroutine per direction) also runs outside a pipe, so that the Linux
// kernel can be measured over exactly the paths our stack is: Forward joins
// two link endpoints through it (typically two TUN devices opened without a
// stack address, whose kernel sides live in two network namespaces: a
// kernel client and a kernel server, with no netem needed), and Shape wraps
// one link endpoint (a TUN device under our stack, say) so that what the
// stack writes and what it receives is shaped. Packets move by reference,
// never copied; the `umptcp emulate` command is Forward on the command line.
//
// The package knows nothing about MPTCP; it moves IP packets.
package tun
