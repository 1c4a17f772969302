// Command umptcp is the command-line face of the umptcp userspace MPTCP
// stack:
//
//	umptcp demo   an in-process MPTCP transfer between two stacks joined by
//	              an emulated link; needs no root and no set-up
//	umptcp nc     netcat over the userspace stack on TUN devices
//
// It holds no protocol logic; everything it does goes through package
// stack and package tun.
package main
