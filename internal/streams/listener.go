package streams

import (
	"net"
	"sync"
)

// front owns a deployment's Kafka socket and hands each accepted connection
// to the broker of the moment. Swapping brokers (unlocked over the
// encrypted log, or locked over nothing) never closes the socket, so a
// locked deployment still answers and says why it refuses a login.
type front struct {
	ln net.Listener

	mu  sync.Mutex
	cur *handoff
	wg  sync.WaitGroup
}

func newFront(ln net.Listener) *front {
	f := &front{ln: ln}
	f.wg.Add(1)
	go f.run()
	return f
}

func (f *front) run() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		f.mu.Lock()
		h := f.cur
		f.mu.Unlock()
		if h == nil || !h.deliver(c) {
			c.Close()
		}
	}
}

// attach makes h receive the next connections.
func (f *front) attach(h *handoff) {
	f.mu.Lock()
	f.cur = h
	f.mu.Unlock()
}

// close stops accepting; brokers are closed by their owner.
func (f *front) close() {
	f.ln.Close()
	f.wg.Wait()
}

// handoff is the net.Listener one broker serves: connections arrive from
// the front, and closing it leaves the socket open.
type handoff struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) deliver(c net.Conn) bool {
	select {
	case h.conns <- c:
		return true
	case <-h.done:
		return false
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }
