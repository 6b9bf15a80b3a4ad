package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// forwardTimeout bounds a request forwarded to the leader.
const forwardTimeout = 15 * time.Second

// forwarded says whether a follower forwards req to the leader. Kafka
// clients send AlterConfigs, IncrementalAlterConfigs and AlterClientQuotas to
// any broker, which forwards them to the controller (KIP-590); franz-go does
// not retry them elsewhere on NOT_CONTROLLER. Topic creation and deletion go
// to the controller Metadata names, so those stay refused.
func forwarded(req kmsg.Request) bool {
	switch req.(type) {
	case *kmsg.AlterConfigsRequest, *kmsg.IncrementalAlterConfigsRequest, *kmsg.AlterClientQuotasRequest:
		return true
	}
	return false
}

// forward sends req to the deployment's leader as this connection's login
// (the leader checks it again and authorizes and audits the request as its
// own) and returns the leader's answer at the client's version. It returns
// nil when the leader cannot be reached: the caller answers NOT_CONTROLLER,
// which the client may retry.
func (c *conn) forward(ctx context.Context, req kmsg.Request) kmsg.Response {
	s := c.sess.Load()
	pl := c.b.cfg.Placement
	if s == nil || pl == nil {
		return nil
	}
	leader := pl.Leader()
	var addr string
	for _, b := range pl.Brokers() {
		if b.NodeID == leader && leader != c.b.cfg.NodeID {
			addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	if addr == "" {
		return nil
	}
	var mech sasl.Mechanism
	if s.mechanism == OAuthBearer {
		mech = oauth.Auth{Token: s.password}.AsMechanism()
	} else {
		mech = plain.Auth{User: s.user, Pass: s.password}.AsMechanism()
	}
	opts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(mech), kgo.RequestRetries(0), kgo.WithLogger(nil)}
	if t := c.b.cfg.TLS; t != nil {
		pinned, err := c.b.ownCertificate()
		if err != nil {
			c.log.Warn("forwarding to the leader: no certificate to pin", "err", err)
			return nil
		}
		// Every node serves the same certificate pair (docs/cluster.md):
		// the leader must present ours, whatever name it answers on.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned) {
					return errors.New("the leader's certificate is not this cluster's")
				}
				return nil
			}}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	version := req.GetVersion()
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	req.SetVersion(version)
	if err != nil {
		c.log.Warn("forwarding to the leader failed", "request", kmsg.NameForKey(req.Key()), "err", err)
		return nil
	}
	resp.SetVersion(version)
	return resp
}

// ownCertificate is the leaf certificate this broker serves.
func (b *Broker) ownCertificate() ([]byte, error) {
	t := b.cfg.TLS
	var cert *tls.Certificate
	switch {
	case t.GetCertificate != nil:
		var err error
		if cert, err = t.GetCertificate(&tls.ClientHelloInfo{}); err != nil {
			return nil, err
		}
	case len(t.Certificates) > 0:
		cert = &t.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	return cert.Certificate[0], nil
}
