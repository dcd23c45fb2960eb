// Command plainmelody is a plain melody server for side-by-side load figures:
// what melody itself costs, without anything of airlay. It speaks enough of
// the airlay wire shapes for wsbench's airlay target (tokens are ignored):
// attach/detach on /ws answered with code 0, POST /api/events with one event
// or an array, each written to every subscriber of type/id. melody's
// defaults, a map from key to sessions under one lock, encoding/json.
//
// It takes the airlay command line that bench/compare.sh uses, so that
//
//	go build -o /tmp/plainmelody ./bench/plainmelody
//	AIRLAY=/tmp/plainmelody bench/compare.sh 3 storm -scenario storm -conns 5000 -keys 5
//
// puts it beside wsbench's ref server. It listens on 127.0.0.1 only, on the
// port of the config file's [webSocketEvents] section, and exits on
// SIGINT/SIGTERM or after 10 minutes. Not part of the product.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/olahol/melody"
)

var (
	answerOK  = []byte(`{"status":200,"message":"Ok","code":0}`)
	answerBad = []byte(`{"status":400,"message":"Invalid request","code":5}`)
)

type server struct {
	mel  *melody.Melody
	mu   sync.RWMutex
	subs map[string]map[*melody.Session]struct{}
}

func main() {
	if len(os.Args) != 5 || os.Args[1] != "web_socket" || os.Args[2] != "server" || os.Args[3] != "--config" {
		log.Fatal("usage: plainmelody web_socket server --config FILE")
	}
	port, err := portOf(os.Args[4])
	if err != nil {
		log.Fatal(err)
	}
	s := &server{mel: melody.New(), subs: map[string]map[*melody.Session]struct{}{}}
	s.mel.Upgrader.CheckOrigin = func(*http.Request) bool { return true }
	s.mel.Config.MaxMessageSize = 64 << 10 // as ref; melody's default (512) refuses RS256 tokens
	s.mel.HandleMessage(s.message)
	s.mel.HandleDisconnect(s.disconnect)
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		_ = s.mel.HandleRequest(w, r)
	})
	mux.HandleFunc("/api/events", s.publish)
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		select {
		case <-sig:
		case <-time.After(10 * time.Minute):
		}
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// portOf reads port = N from the config file.
func portOf(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.TrimSpace(k) == "port" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no port", file)
}

func (s *server) message(sess *melody.Session, msg []byte) {
	var req struct {
		Action string `json:"action"`
		Event  struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"event"`
	}
	if json.Unmarshal(msg, &req) != nil || req.Event.Type == "" || (req.Action != "attach" && req.Action != "detach") {
		_ = sess.Write(answerBad)
		return
	}
	key := req.Event.Type + "/" + req.Event.ID
	s.mu.Lock()
	if req.Action == "attach" {
		set := s.subs[key]
		if set == nil {
			set = map[*melody.Session]struct{}{}
			s.subs[key] = set
		}
		set[sess] = struct{}{}
		sess.Set(key, true)
	} else if set := s.subs[key]; set != nil {
		delete(set, sess)
		if len(set) == 0 {
			delete(s.subs, key)
		}
		sess.UnSet(key)
	}
	s.mu.Unlock()
	_ = sess.Write(answerOK)
}

func (s *server) disconnect(sess *melody.Session) {
	s.mu.Lock()
	for k := range sess.Keys { // no other goroutine sets keys any more

		if set := s.subs[k]; set != nil {
			delete(set, sess)
			if len(set) == 0 {
				delete(s.subs, k)
			}
		}
	}
	s.mu.Unlock()
}

func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	body = bytes.TrimSpace(body)
	var raws []json.RawMessage
	if len(body) > 0 && body[0] == '[' {
		if json.Unmarshal(body, &raws) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	} else {
		raws = []json.RawMessage{body}
	}
	for _, raw := range raws {
		var ev struct{ Type, ID string }
		if json.Unmarshal(raw, &ev) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.RLock()
		for sess := range s.subs[ev.Type+"/"+ev.ID] {
			_ = sess.Write(raw)
		}
		s.mu.RUnlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answerOK)
}
