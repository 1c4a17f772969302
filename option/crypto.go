package option

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// RFC 8684 v1 uses SHA-256 and HMAC-SHA256 (RFC 2104 / RFC 6234) with
// 64-bit keys that are hashed in network byte order, exactly as they
// appear on the wire.

// Token returns the connection token derived from a key: the most
// significant 32 bits of SHA-256(key) (RFC 8684 §3.1). A host identifies
// an MPTCP connection in MP_JOIN by the token of the receiver's key.
func Token(key uint64) uint32 {
	h := hashKey(key)
	return binary.BigEndian.Uint32(h[:4])
}

// IDSN returns the initial data sequence number derived from a key: the
// least significant 64 bits of SHA-256(key) (RFC 8684 §3.1). The first data
// octet a host sends has DSN IDSN+1 (the SYN occupies IDSN).
func IDSN(key uint64) uint64 {
	h := hashKey(key)
	return binary.BigEndian.Uint64(h[24:])
}

func hashKey(key uint64) [32]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], key)
	return sha256.Sum256(b[:])
}

// NewKey returns a random 64-bit key from crypto/rand (RFC 8684 §3.1
// requires keys to be unpredictable, RFC 4086). Callers must still check
// that the key's Token is not in use locally and draw again if it is.
func NewKey() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// JoinHMAC computes HMAC-SHA256(key = keyA||keyB, msg = nonceA||nonceB) as
// used by MP_JOIN (RFC 8684 §3.2). The sender of an MP_JOIN HMAC always
// puts its own values first:
//
//   - In the SYN/ACK, the passive side (host B) sends
//     TruncHMAC(JoinHMAC(keyB, keyA, nonceB, nonceA)).
//   - In the third ACK, the active side (host A) sends the leftmost 160
//     bits of JoinHMAC(keyA, keyB, nonceA, nonceB).
//
// where keyX is the key host X announced in MP_CAPABLE and nonceX the
// random number host X sent in its MP_JOIN. The receiver recomputes the
// peer's HMAC by calling JoinHMAC(peerKey, ownKey, peerNonce, ownNonce).
func JoinHMAC(keyA, keyB uint64, nonceA, nonceB uint32) [32]byte {
	var msg [8]byte
	binary.BigEndian.PutUint32(msg[:4], nonceA)
	binary.BigEndian.PutUint32(msg[4:], nonceB)
	return hmacKeys(keyA, keyB, msg[:])
}

// TruncHMAC returns the leftmost 64 bits of h, as carried by the MP_JOIN
// SYN/ACK (RFC 8684 §3.2). (ADD_ADDR uses the rightmost bits instead, see
// AddAddrHMAC.)
func TruncHMAC(h [32]byte) uint64 { return binary.BigEndian.Uint64(h[:8]) }

// AddAddrHMAC returns the truncated HMAC of an ADD_ADDR (RFC 8684 §3.4.1):
// the rightmost 64 bits of HMAC-SHA256(key = senderKey||receiverKey,
// msg = addrID || address || port). The address is 4 octets when
// addr.Is4() and 16 otherwise (as AddAddr.Append encodes it); the port is
// always 2 octets and is 0 when the option carries no port.
func AddAddrHMAC(senderKey, receiverKey uint64, id uint8, addr netip.Addr, port uint16) uint64 {
	var msg [1 + 16 + 2]byte
	msg[0] = id
	n := 1
	if addr.Is4() {
		a := addr.As4()
		n += copy(msg[n:], a[:])
	} else {
		a := addr.As16()
		n += copy(msg[n:], a[:])
	}
	binary.BigEndian.PutUint16(msg[n:], port)
	n += 2
	h := hmacKeys(senderKey, receiverKey, msg[:n])
	return binary.BigEndian.Uint64(h[24:])
}

// hmacKeys is HMAC-SHA256 (RFC 2104) with the 16-octet key k1||k2 and a
// message of at most 32 octets, written out so that it needs no heap
// (crypto/hmac allocates two hash states per call and these run per
// subflow/address).
func hmacKeys(k1, k2 uint64, msg []byte) [32]byte {
	const block = sha256.BlockSize
	var key [16]byte
	binary.BigEndian.PutUint64(key[:8], k1)
	binary.BigEndian.PutUint64(key[8:], k2)

	var buf [block + sha256.Size]byte
	for i := 0; i < block; i++ {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x36
	}
	n := copy(buf[block:], msg)
	inner := sha256.Sum256(buf[:block+n])
	for i := 0; i < block; i++ {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x5c
	}
	copy(buf[block:], inner[:])
	return sha256.Sum256(buf[:])
}
