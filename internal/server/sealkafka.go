package server

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/store"
)

// sealedKafka holds, while the server is sealed, a listener on each
// deployment's Kafka port that answers logins with "sealed": a client sees
// why it cannot connect instead of a bare refusal. It holds no key and
// reads no record.
type sealedKafka struct {
	sealedMu   sync.Mutex
	sealedLns  []net.Listener
	sealedConn map[net.Conn]struct{}
	sealedWG   sync.WaitGroup
}

const kafkaSealedMessage = "Keyline is sealed: no deployment can be used until an operator unseals the server"

// openSealedListeners binds every deployment's port (the port is not
// secret); a port that cannot be bound is logged and skipped.
func (s *Server) openSealedListeners(ctx context.Context) {
	var ports []int
	q, args := `SELECT port FROM streams_deployments WHERE port > 0`, []any{}
	if s.db.Shared() && s.node != nil {
		// In a cluster each node has its own port for each deployment.
		q, args = `SELECT port FROM streams_endpoints WHERE node_id = ? AND port > 0`, []any{s.node.id}
	}
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p int
			if err := rows.Scan(&p); err != nil {
				return err
			}
			ports = append(ports, p)
		}
		return rows.Err()
	})
	if err != nil {
		// A database that never had a deployment has no such table.
		s.cfg.Logger.Debug("no deployments to answer for while sealed", "err", err)
		return
	}
	k := &s.sealedKafka
	k.sealedMu.Lock()
	defer k.sealedMu.Unlock()
	if k.sealedConn == nil {
		k.sealedConn = map[net.Conn]struct{}{}
	}
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.KafkaHost, strconv.Itoa(p)))
		if err != nil {
			s.cfg.Logger.Warn("a deployment's Kafka port cannot answer while sealed", "port", p, "err", err)
			continue
		}
		k.sealedLns = append(k.sealedLns, ln)
		k.sealedWG.Add(1)
		go func() {
			defer k.sealedWG.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				k.sealedMu.Lock()
				k.sealedConn[c] = struct{}{}
				k.sealedMu.Unlock()
				k.sealedWG.Add(1)
				go func() {
					defer k.sealedWG.Done()
					refuseSealed(c)
					k.sealedMu.Lock()
					delete(k.sealedConn, c)
					k.sealedMu.Unlock()
				}()
			}
		}()
	}
}

// closeSealedListeners frees the ports for the deployments' brokers.
func (s *Server) closeSealedListeners() {
	k := &s.sealedKafka
	k.sealedMu.Lock()
	for _, ln := range k.sealedLns {
		ln.Close()
	}
	for c := range k.sealedConn {
		c.Close()
	}
	k.sealedLns = nil
	k.sealedMu.Unlock()
	k.sealedWG.Wait()
}

// refuseSealed speaks just enough Kafka for a client to log in and be told
// the server is sealed: ApiVersions, SaslHandshake (PLAIN), then a failed
// SaslAuthenticate carrying the message. Anything else closes the
// connection.
func refuseSealed(c net.Conn) {
	defer c.Close()
	for {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(size[:])
		if n < 8 || n > 64<<10 {
			return
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(c, frame); err != nil {
			return
		}
		key, version := int16(binary.BigEndian.Uint16(frame)), int16(binary.BigEndian.Uint16(frame[2:]))
		corr := frame[4:8]
		req := kmsg.RequestForKey(key)
		if req == nil {
			return
		}
		req.SetVersion(version)
		var resp kmsg.Response
		last := false
		switch key {
		case kmsg.ApiVersions.Int16():
			r := req.ResponseKind().(*kmsg.ApiVersionsResponse)
			if version > 3 {
				r.SetVersion(0)
				r.ErrorCode = kerr.UnsupportedVersion.Code
			}
			for _, k := range []kmsg.Key{kmsg.ApiVersions, kmsg.SASLHandshake, kmsg.SASLAuthenticate} {
				r.ApiKeys = append(r.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k.Int16(), MaxVersion: map[kmsg.Key]int16{kmsg.ApiVersions: 3, kmsg.SASLHandshake: 1, kmsg.SASLAuthenticate: 2}[k]})
			}
			resp = r
		case kmsg.SASLHandshake.Int16():
			r := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
			r.SupportedMechanisms = []string{"PLAIN"}
			resp = r
		case kmsg.SASLAuthenticate.Int16():
			r := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			r.ErrorCode = kerr.SaslAuthenticationFailed.Code
			msg := kafkaSealedMessage
			r.ErrorMessage = &msg
			resp, last = r, true
		default:
			return
		}
		// The response header is the correlation id, plus an empty tag
		// section for flexible responses other than ApiVersions.
		out := append([]byte{0, 0, 0, 0}, corr...)
		if resp.IsFlexible() && key != kmsg.ApiVersions.Int16() {
			out = append(out, 0)
		}
		out = resp.AppendTo(out)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		if _, err := c.Write(out); err != nil || last {
			return
		}
	}
}
