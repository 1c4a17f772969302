package main

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umptcp/umptcp/option"
)

// optional runs an extra capture whose failure is only logged: the core
// vectors (MP_CAPABLE, DSS) are what the tests need, the rest depends on
// path manager behaviour that varies between kernel versions.
func optional(what string, f func() error) {
	if err := f(); err != nil {
		log.Printf("optional capture %q skipped: %v", what, err)
	}
}

func endpoints(cmds ...[]string) error {
	if err := nsRun("ip", "mptcp", "endpoint", "flush"); err != nil {
		return err
	}
	for _, c := range cmds {
		if err := nsRun(append([]string{"ip", "mptcp", "endpoint", "add"}, c...)...); err != nil {
			log.Printf("endpoint %v: %v", c, err)
		}
	}
	return nil
}

func acceptWait(lfd int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) || time.Now().After(deadline) {
			return -1, fmt.Errorf("accept: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitWritable(fd int, d time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(fds, int(d/time.Millisecond)); err != nil {
		return err
	}
	if fds[0].Revents&unix.POLLOUT == 0 {
		return errors.New("connect did not complete")
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

func listen(ap netip.AddrPort) (int, error) {
	fd, err := mptcpSocket(ap.Addr().Is6())
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 8); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func keyMeta(kernKey uint64, info *mptcpInfo, extra ...[2]string) meta {
	m := meta{
		{"kernel-key", hexs(kernKey)},
		{"kernel-idsn", hexs(option.IDSN(kernKey))},
		{"our-idsn", hexs(option.IDSN(ourKey))},
	}
	if info != nil {
		m = append(m, [2]string{"kernel-token-mptcp-info", hexs(info.token)})
	}
	return append(m, extra...)
}

// passive: the kernel is the listener, we are the MPTCP client.
func passive(t *tunDev, csum bool) error {
	sfx := suffix(csum)
	port := uint16(5002)
	if csum {
		port += 100
	}
	if err := endpoints(
		[]string{"10.211.0.3", "id", "5", "signal"},
		[]string{"10.211.0.4", "port", "5010", "id", "6", "signal"},
	); err != nil {
		return err
	}
	lfd, err := listen(netip.AddrPortFrom(kernAddr, port))
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	defer t.drain()

	c := &conn{t: t, us: netip.AddrPortFrom(peerAddr, 40000+port), them: netip.AddrPortFrom(kernAddr, port), isn: 1000, sndNxt: 1000}
	syn := option.MPCapable{Version: 1, Flags: mpcFlags(csum), Form: option.MPCSyn}
	if err := c.send(fSYN, append(mss(), syn.Append(nil)...), nil); err != nil {
		return err
	}
	sa, err := c.expect("SYN-ACK", func(p *pkt) bool { return p.flags == fSYN|fACK })
	if err != nil {
		return err
	}
	if !sa.set.Has(option.SubtypeMPCapable) {
		return fmt.Errorf("kernel SYN-ACK without MP_CAPABLE: %v", sa)
	}
	kernKey := sa.set.MPCapable.SenderKey
	c.kernISN, c.rcvNxt = sa.seq, sa.seq+1

	ack := option.MPCapable{Version: 1, Flags: sa.set.MPCapable.Flags, Form: option.MPCAck, SenderKey: ourKey, ReceiverKey: kernKey}
	if err := c.send(fACK, ack.Append(nil), nil); err != nil {
		return err
	}
	payload := []byte("hello kernel, from umptcp (we are the client)")
	dsn := option.IDSN(ourKey) + 1
	mpcd := option.MPCapable{Version: 1, Flags: sa.set.MPCapable.Flags, Form: option.MPCAckData,
		SenderKey: ourKey, ReceiverKey: kernKey, DataLen: uint16(len(payload))}
	if csum {
		var s option.Sum
		s.Add(payload)
		mpcd.Form = option.MPCAckDataCsum
		mpcd.Checksum = option.DSSChecksum(dsn, 1, mpcd.DataLen, s.Value())
	}
	if err := c.send(fACK|fPSH, mpcd.Append(nil), payload); err != nil {
		return err
	}
	afd, err := acceptWait(lfd, 3*time.Second)
	if err != nil {
		return err
	}
	defer func() {
		if afd >= 0 {
			unix.Close(afd)
		}
	}()
	info, err := getInfo(afd)
	if err != nil {
		return fmt.Errorf("MPTCP_INFO: %w", err)
	}
	if info.token != option.Token(kernKey) {
		return fmt.Errorf("kernel token %08x != Token(kernel key) %08x", info.token, option.Token(kernKey))
	}
	if err := save("passive-synack"+sfx, fmt.Sprintf("kernel SYN-ACK answering our MP_CAPABLE v1 SYN (flags %#x), kernel is listener, checksum_enabled=%v", syn.Flags, csum),
		sa, keyMeta(kernKey, &info, [2]string{"kernel-isn", fmt.Sprint(sa.seq)})); err != nil {
		return err
	}
	da, err := c.kernelAccepts(afd, payload, dsn, fmt.Sprintf("MP_CAPABLE ACK+data (csum=%v)", csum))
	if err != nil {
		return err
	}
	if err := save("passive-dss-ack"+sfx, fmt.Sprintf("kernel ACK acknowledging our %d bytes of MP_CAPABLE data (DSN IDSN(our-key)+1), kernel is listener, checksum_enabled=%v", len(payload), csum),
		da, keyMeta(kernKey, &info, [2]string{"kernel-isn", fmt.Sprint(c.kernISN)})); err != nil {
		return err
	}

	kdata := []byte("hello umptcp, this is the Linux kernel (server side)")
	if _, err := unix.Write(afd, kdata); err != nil {
		return err
	}
	dp, err := c.expect("DSS data", func(p *pkt) bool {
		return len(p.payload) > 0 && p.set.Has(option.SubtypeDSS) && p.set.DSS.HasMapping
	})
	if err != nil {
		return err
	}
	c.consume(dp)
	if err := save("passive-dss-data"+sfx, fmt.Sprintf("kernel data segment with DSS mapping, kernel is listener, checksum_enabled=%v", csum),
		dp, keyMeta(kernKey, &info, [2]string{"kernel-isn", fmt.Sprint(c.kernISN)})); err != nil {
		return err
	}
	kack := dp.set.DSS.DSN + uint64(dp.set.DSS.DataLen)
	if err := c.send(fACK, dssOut(kack, 0, 0, nil, csum), nil); err != nil {
		return err
	}

	var firstID uint8
	optional("ADD_ADDR", func() error {
		aa, err := t.expect("ADD_ADDR", 5*time.Second, func(p *pkt) bool { return c.from(p) && p.set.Has(option.SubtypeAddAddr) })
		if err != nil {
			return err
		}
		firstID = aa.set.AddAddr.AddrID
		name := "passive-add-addr"
		if aa.set.AddAddr.HasPort {
			name += "-port"
		}
		if err := save(name+sfx, "kernel ADD_ADDR for a signal endpoint (ip mptcp endpoint ... signal), kernel is listener", aa, keyMeta(kernKey, &info)); err != nil {
			return err
		}
		echo := aa.set.AddAddr
		echo.Echo, echo.HasHMAC, echo.HMAC = true, false, 0
		if err := c.send(fACK, echo.Append(nil), nil); err != nil {
			return err
		}
		aa2, err := t.expect("second ADD_ADDR", 5*time.Second, func(p *pkt) bool {
			return c.from(p) && p.set.Has(option.SubtypeAddAddr) && p.set.AddAddr.AddrID != firstID
		})
		if err != nil {
			return err
		}
		name = "passive-add-addr"
		if aa2.set.AddAddr.HasPort {
			name += "-port"
		}
		if err := save(name+sfx, "kernel ADD_ADDR for a signal endpoint (ip mptcp endpoint ... signal), kernel is listener", aa2, keyMeta(kernKey, &info)); err != nil {
			return err
		}
		echo = aa2.set.AddAddr
		echo.Echo, echo.HasHMAC, echo.HMAC = true, false, 0
		return c.send(fACK, echo.Append(nil), nil)
	})
	optional("REMOVE_ADDR", func() error {
		if err := nsRun("ip", "mptcp", "endpoint", "delete", "id", "5"); err != nil {
			return err
		}
		ra, err := c.expect("REMOVE_ADDR", func(p *pkt) bool { return p.set.Has(option.SubtypeRemoveAddr) })
		if err != nil {
			return err
		}
		return save("passive-remove-addr"+sfx, "kernel REMOVE_ADDR after ip mptcp endpoint delete id 5, kernel is listener", ra, keyMeta(kernKey, &info))
	})

	if csum {
		optional("MP_FAIL", func() error {
			bad := []byte("this payload is sent with a wrong DSS checksum")
			d := dsn + uint64(len(payload))
			opts := dssOut(kack, d, c.sndNxt-c.isn, bad, true)
			opts[len(opts)-1] ^= 0x5a // corrupt the checksum
			if err := c.send(fACK|fPSH, opts, bad); err != nil {
				return err
			}
			mf, err := c.expect("MP_FAIL", func(p *pkt) bool { return p.set.Has(option.SubtypeMPFail) })
			if err != nil {
				return err
			}
			return save("passive-mp-fail"+sfx, fmt.Sprintf("kernel MP_FAIL after we sent %d bytes at DSN %#x with a corrupted DSS checksum, kernel is listener", len(bad), d),
				mf, keyMeta(kernKey, &info, [2]string{"bad-mapping-dsn", hexs(d)}))
		})
		return nil
	}

	optional("MP_FASTCLOSE", func() error {
		if err := unix.SetsockoptLinger(afd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return err
		}
		unix.Close(afd)
		afd = -1
		fc, err := c.expect("MP_FASTCLOSE", func(p *pkt) bool { return p.set.Has(option.SubtypeMPFastclose) })
		if err != nil {
			return err
		}
		if err := save("passive-fastclose", "kernel MP_FASTCLOSE after close() with SO_LINGER 0, kernel is listener", fc, keyMeta(kernKey, &info)); err != nil {
			return err
		}
		if !fc.set.Has(option.SubtypeMPTCPRST) {
			rst, err := c.expect("RST", func(p *pkt) bool { return p.flags&fRST != 0 && p.set.Has(option.SubtypeMPTCPRST) })
			if err != nil {
				return err
			}
			return save("passive-tcprst", "kernel RST with MP_TCPRST after fast close, kernel is listener", rst, keyMeta(kernKey, &info))
		}
		return nil
	})
	return nil
}

// active: the kernel connects to us.
func active(t *tunDev, csum bool) error {
	sfx := suffix(csum)
	port := uint16(5001)
	if csum {
		port += 100
	}
	if err := endpoints([]string{"10.211.0.3", "dev", tunName, "id", "7", "subflow"}); err != nil {
		return err
	}
	defer t.drain()
	fd, err := mptcpSocket(false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(kernAddr, 0))); err != nil {
		return err
	}
	if err := unix.Connect(fd, sockaddr(netip.AddrPortFrom(peerAddr, port))); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	us := netip.AddrPortFrom(peerAddr, port)
	syn, err := t.expect("kernel SYN", 3*time.Second, func(p *pkt) bool { return p.dst == us && p.flags == fSYN })
	if err != nil {
		return err
	}
	if err := save("active-syn"+sfx, fmt.Sprintf("kernel SYN of connect() on an IPPROTO_MPTCP socket, checksum_enabled=%v", csum), syn,
		meta{{"kernel-isn", fmt.Sprint(syn.seq)}}); err != nil {
		return err
	}
	c := &conn{t: t, us: us, them: syn.src, isn: 7000, sndNxt: 7000, rcvNxt: syn.seq + 1, kernISN: syn.seq}
	ack, err := c.answerMPCSyn(ourKey, csum, "MP_CAPABLE third ACK")
	if err != nil {
		return err
	}
	kernKey := ack.set.MPCapable.SenderKey
	if err := waitWritable(fd, 3*time.Second); err != nil {
		return err
	}
	info, err := getInfo(fd)
	if err != nil {
		return fmt.Errorf("MPTCP_INFO: %w", err)
	}
	if info.token != option.Token(kernKey) {
		return fmt.Errorf("kernel token %08x != Token(kernel key) %08x", info.token, option.Token(kernKey))
	}
	km := func(extra ...[2]string) meta {
		return keyMeta(kernKey, &info, append([][2]string{{"kernel-isn", fmt.Sprint(c.kernISN)}}, extra...)...)
	}
	if err := save("active-ack"+sfx, fmt.Sprintf("kernel third ACK (MP_CAPABLE with both keys) after our SYN-ACK (flags %#x), kernel connected, checksum_enabled=%v", mpcFlags(csum), csum), ack, km()); err != nil {
		return err
	}

	kdata := []byte("hello umptcp, this is the Linux kernel (client side)")
	if _, err := unix.Write(fd, kdata); err != nil {
		return err
	}
	dp, err := c.expect("kernel first data", func(p *pkt) bool { return len(p.payload) > 0 })
	if err != nil {
		return err
	}
	c.consume(dp)
	if err := save("active-data"+sfx, fmt.Sprintf("kernel first data segment after the handshake (MP_CAPABLE with data-level length until it sees a DSS), checksum_enabled=%v", csum), dp, km()); err != nil {
		return err
	}

	kack := option.IDSN(kernKey) + 1 + uint64(len(kdata))
	payload := []byte("hello kernel, from umptcp (we are the server)")
	dsn := option.IDSN(ourKey) + 1
	if err := c.send(fACK|fPSH, dssOut(kack, dsn, 1, payload, csum), payload); err != nil {
		return err
	}
	da, err := c.kernelAccepts(fd, payload, dsn, fmt.Sprintf("DSS-mapped data (csum=%v)", csum))
	if err != nil {
		return err
	}
	if err := save("active-dss-ack"+sfx, fmt.Sprintf("kernel ACK with DSS DATA_ACK for our %d bytes at DSN IDSN(our-key)+1, kernel connected, checksum_enabled=%v", len(payload), csum), da, km()); err != nil {
		return err
	}
	kdata2 := []byte("second kernel write, mapped by a DSS option")
	if _, err := unix.Write(fd, kdata2); err != nil {
		return err
	}
	dp2, err := c.expect("kernel DSS data", func(p *pkt) bool {
		return len(p.payload) > 0 && p.set.Has(option.SubtypeDSS) && p.set.DSS.HasMapping
	})
	if err != nil {
		return err
	}
	c.consume(dp2)
	if err := save("active-dss-data"+sfx, fmt.Sprintf("kernel data segment with DSS mapping, kernel connected, checksum_enabled=%v", csum), dp2, km()); err != nil {
		return err
	}
	kack = dp2.set.DSS.DSN + uint64(dp2.set.DSS.DataLen)
	if err := c.send(fACK, dssOut(kack, 0, 0, nil, csum), nil); err != nil {
		return err
	}

	optional("MP_JOIN", func() error {
		js, err := t.expect("MP_JOIN SYN", 5*time.Second, func(p *pkt) bool {
			return p.flags == fSYN && p.set.Has(option.SubtypeMPJoin) && p.dst.Addr() == peerAddr
		})
		if err != nil {
			return err
		}
		if err := save("active-join-syn"+sfx, "kernel MP_JOIN SYN for a subflow endpoint (ip mptcp endpoint add 10.211.0.3 subflow); token is Token(our-key)", js,
			km([2]string{"kernel-isn", fmt.Sprint(js.seq)})); err != nil {
			return err
		}
		j := &conn{t: t, us: js.dst, them: js.src, isn: 9000, sndNxt: 9000, rcvNxt: js.seq + 1, kernISN: js.seq}
		h := option.JoinHMAC(ourKey, kernKey, ourJoinNon, js.set.MPJoin.Nonce)
		jsa := option.MPJoin{Form: option.JoinSynAck, AddrID: 0, TruncHMAC: option.TruncHMAC(h), Nonce: ourJoinNon}
		if err := j.send(fSYN|fACK, append(mss(), jsa.Append(nil)...), nil); err != nil {
			return err
		}
		ja, err := j.expect("MP_JOIN ACK", func(p *pkt) bool {
			return p.set.Has(option.SubtypeMPJoin) && p.set.MPJoin.Form == option.JoinAck
		})
		if err != nil {
			return err
		}
		log.Printf("kernel accepted our MP_JOIN SYN-ACK HMAC")
		if err := save("active-join-ack"+sfx, "kernel MP_JOIN third ACK (160-bit HMAC) after our MP_JOIN SYN-ACK", ja,
			km([2]string{"kernel-join-nonce", hexs(js.set.MPJoin.Nonce)}, [2]string{"our-join-nonce", hexs(ourJoinNon)})); err != nil {
			return err
		}
		// RFC 8684 §3.2: the joining host waits for the ACK of its
		// third ACK before the subflow is usable.
		if err := j.send(fACK, dssOut(kack, 0, 0, nil, csum), nil); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		if err := nsRun("ip", "mptcp", "endpoint", "change", "id", "7", "backup"); err != nil {
			return err
		}
		pr, err := j.expect("MP_PRIO", func(p *pkt) bool { return p.set.Has(option.SubtypeMPPrio) })
		if err != nil {
			return err
		}
		return save("active-mp-prio"+sfx, "kernel MP_PRIO after ip mptcp endpoint change id 7 backup", pr, km())
	})

	optional("DATA_FIN", func() error {
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return err
		}
		df, err := c.expect("DATA_FIN", func(p *pkt) bool {
			return p.set.Has(option.SubtypeDSS) && p.set.DSS.DataFin
		})
		if err != nil {
			return err
		}
		return save("active-data-fin"+sfx, "kernel DSS with DATA_FIN after shutdown(SHUT_WR)", df, km())
	})
	return nil
}

// active6: kernel connects over IPv6; also lets the kernel announce an
// IPv6 signal endpoint.
func active6(t *tunDev) error {
	if err := nsRun("ip", "addr", "add", "fd00:211::3/64", "dev", tunName, "nodad"); err != nil {
		return err
	}
	if err := endpoints([]string{"fd00:211::3", "id", "8", "signal"}); err != nil {
		return err
	}
	defer t.drain()
	port := uint16(5003)
	fd, err := mptcpSocket(true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// Bind to ::1 so that the signal endpoint ::3 is a new address.
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(kernAddr6, 0))); err != nil {
		return err
	}
	if err := unix.Connect(fd, sockaddr(netip.AddrPortFrom(peerAddr6, port))); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	us := netip.AddrPortFrom(peerAddr6, port)
	syn, err := t.expect("kernel SYN (IPv6)", 3*time.Second, func(p *pkt) bool { return p.dst == us && p.flags == fSYN })
	if err != nil {
		return err
	}
	if err := save("active6-syn", "kernel SYN of connect() on an AF_INET6 IPPROTO_MPTCP socket", syn, meta{{"kernel-isn", fmt.Sprint(syn.seq)}}); err != nil {
		return err
	}
	c := &conn{t: t, us: us, them: syn.src, isn: 3000, sndNxt: 3000, rcvNxt: syn.seq + 1, kernISN: syn.seq}
	ack, err := c.answerMPCSyn(ourKey, false, "MP_CAPABLE third ACK (IPv6)")
	if err != nil {
		return err
	}
	kernKey := ack.set.MPCapable.SenderKey
	if err := waitWritable(fd, 3*time.Second); err != nil {
		return err
	}
	info, err := getInfo(fd)
	if err != nil {
		return err
	}
	if err := save("active6-ack", "kernel third ACK over IPv6", ack, keyMeta(kernKey, &info)); err != nil {
		return err
	}
	// A DSS from us makes the kernel's side fully established, which is
	// when the path manager announces its signal endpoints.
	if err := c.send(fACK, dssOut(option.IDSN(kernKey)+1, 0, 0, nil, false), nil); err != nil {
		return err
	}
	optional("ADD_ADDR IPv6", func() error {
		aa, err := c.expect("ADD_ADDR (IPv6)", func(p *pkt) bool { return p.set.Has(option.SubtypeAddAddr) })
		if err != nil {
			return err
		}
		return save("active6-add-addr", "kernel ADD_ADDR for an IPv6 signal endpoint, kernel connected", aa, keyMeta(kernKey, &info))
	})
	return nil
}

// answerMPCSyn answers the kernel's MP_CAPABLE SYN with our SYN-ACK (key
// ourKey) and waits for its third ACK, which carries both keys.
func (c *conn) answerMPCSyn(ourKey uint64, csum bool, what string) (*pkt, error) {
	sa := option.MPCapable{Version: 1, Flags: mpcFlags(csum), Form: option.MPCSynAck, SenderKey: ourKey}
	if err := c.send(fSYN|fACK, append(mss(), sa.Append(nil)...), nil); err != nil {
		return nil, err
	}
	return c.expect(what, func(p *pkt) bool {
		return p.set.Has(option.SubtypeMPCapable) && p.set.MPCapable.Form == option.MPCAck
	})
}

// kernelAccepts checks that the kernel socket fd reads exactly the payload
// we sent at DSN dsn, and returns the kernel's segment whose DSS
// acknowledges it.
func (c *conn) kernelAccepts(fd int, payload []byte, dsn uint64, what string) (*pkt, error) {
	got, err := readAll(fd, len(payload), 3*time.Second)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, payload) {
		return nil, fmt.Errorf("kernel read %q, want %q", got, payload)
	}
	log.Printf("kernel accepted our %s", what)
	return c.expect("DSS DATA_ACK", func(p *pkt) bool {
		return p.set.Has(option.SubtypeDSS) && p.set.DSS.HasDataAck && p.set.DSS.DataAck == dsn+uint64(len(payload))
	})
}
