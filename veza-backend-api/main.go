// veza-api stand-in: health at /api/v1/health, a WebSocket at /api/v1/ws that greets and
// echoes, GET /api/v1/tracks/<id> (a read route), and POST /api/v1/plays (an unsafe request: records a play), each answer naming the
// instance. Standard library only, logs to stdout, writes
// nothing to disk, so it runs under the hardened systemd unit of the binary_service role.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Baked in at link time (Makefile: -ldflags -X), so a deploy pushes one self-describing file.
var (
	version    = "dev"
	broken     = "" // "1": refuse to start
	crashAfter = "" // seconds after start at which to exit 1
	slowMs     = "" // delay before every answer
	errorRate  = "" // share of requests (all but the health path) answered 500, e.g. "0.2"
)

const (
	serviceName   = "backend-api"
	defaultPort   = "8080"
	healthPath    = "/api/v1/health"
	websocketPath = "/api/v1/ws"
	playsPath     = "/api/v1/plays"
	tracksPrefix  = "/api/v1/tracks/" // GET /api/v1/tracks/<id>: a read route for load that is not the health check
	maxPlayBody   = 4096
	// systemd sends SIGKILL after TimeoutStopSec=15; finish well before that.
	drainTimeout = 5 * time.Second
)

// variant is the baked behaviour of this build.
type variant struct {
	broken     bool
	crashAfter time.Duration
	slow       time.Duration
	errorRate  float64
}

func main() {
	os.Exit(run())
}

func run() int {
	build, err := bakedVariant()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: bad build: %v\n", serviceName, version, err)
		return 2
	}
	if build.broken {
		// Fail at start so the systemd unit fails and a deploy must notice.
		fmt.Fprintf(os.Stderr, "%s %s: this build is broken on purpose (--broken); refusing to start\n", serviceName, version)
		return 1
	}
	port := os.Getenv("LISTEN_PORT")
	if port == "" {
		port = defaultPort
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		fmt.Fprintf(os.Stderr, "%s: LISTEN_PORT=%q is not a port number\n", serviceName, port)
		return 2
	}
	listener, err := net.Listen("tcp4", "0.0.0.0:"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		return 1
	}
	logger := log.New(os.Stdout, fmt.Sprintf("%s[%s]: ", serviceName, instanceName()), 0)
	if build.crashAfter > 0 {
		time.AfterFunc(build.crashAfter, func() {
			fmt.Fprintf(os.Stderr, "%s %s: crashing on purpose (--crash-after %s)\n", serviceName, version, crashAfter)
			os.Exit(1)
		})
	}
	return serveUntilSignal(listener, newApp(instanceName(), build, logger), logger)
}

func bakedVariant() (variant, error) {
	crash, err := bakedNumber("crash-after", crashAfter)
	if err != nil {
		return variant{}, err
	}
	slow, err := bakedNumber("slow-ms", slowMs)
	if err != nil {
		return variant{}, err
	}
	rate, err := bakedFraction("error-rate", errorRate)
	if err != nil {
		return variant{}, err
	}
	return variant{
		broken:     broken == "1",
		crashAfter: time.Duration(crash) * time.Second,
		slow:       time.Duration(slow) * time.Millisecond,
		errorRate:  rate,
	}, nil
}

// bakedFraction reads a baked share between 0 and 1; empty means 0.
func bakedFraction(name, text string) (float64, error) {
	if text == "" {
		return 0, nil
	}
	value, err := strconv.ParseFloat(text, 64)
	if err != nil || value < 0 || value > 1 {
		return 0, fmt.Errorf("%s=%q is not a fraction between 0 and 1", name, text)
	}
	return value, nil
}

// bakedNumber reads a baked count; empty means 0.
func bakedNumber(name, text string) (uint64, error) {
	if text == "" {
		return 0, nil
	}
	value, err := strconv.ParseUint(text, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a whole number", name, text)
	}
	return value, nil
}

func instanceName() string {
	if name := os.Getenv("INSTANCE_NAME"); name != "" {
		return name
	}
	name, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return name
}

// serveUntilSignal serves until SIGTERM/SIGINT, then drains: the listener closes, idle
// keep-alive connections close, in-flight requests finish and WebSocket sessions get a
// close frame, all within drainTimeout. A drain cut short still exits 0: stopping was asked for.
func serveUntilSignal(listener net.Listener, handler *app, logger *log.Logger) int {
	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          logger,
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	logger.Printf("version %s listening on %s", version, listener.Addr())

	select {
	case err := <-served:
		logger.Printf("stopped serving: %v", err)
		return 1
	case received := <-stop:
		logger.Printf("%v: draining", received)
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	handler.sessions.goAway()
	if err := server.Shutdown(ctx); err != nil {
		logger.Printf("drain cut short: %v", err)
	}
	if !handler.sessions.wait(ctx) {
		logger.Printf("drain cut short: WebSocket sessions still open")
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		logger.Printf("serve: %v", err)
	}
	logger.Printf("stopped")
	return 0
}

// app routes the requests and keeps the open WebSocket sessions for the drain.
type app struct {
	instance string
	build    variant
	logger   *log.Logger
	sessions *sessionSet
	served   atomic.Uint64 // requests counted for the baked error rate
}

func newApp(instance string, build variant, logger *log.Logger) *app {
	return &app{instance: instance, build: build, logger: logger, sessions: newSessionSet()}
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.build.slow > 0 {
		time.Sleep(a.build.slow)
	}
	var status int
	if a.failsThisOne(r) {
		status = sendJSON(w, http.StatusInternalServerError, failure{Instance: a.instance, Version: version,
			Error: "failed on purpose (--error-rate " + errorRate + ")"})
	} else {
		status = a.route(w, r)
	}
	a.logger.Printf("%s %q %d", r.RemoteAddr, r.Method+" "+r.RequestURI+" "+r.Proto, status)
}

// failsThisOne says whether this request gets the baked 500: exactly errorRate of the requests
// outside the health path (the n-th fails when floor(n*rate) moves), so health checks and the
// deploy's gates stay green as a subtly bad release would keep them.
func (a *app) failsThisOne(r *http.Request) bool {
	if a.build.errorRate <= 0 || r.URL.Path == healthPath {
		return false
	}
	n := a.served.Add(1)
	return uint64(float64(n)*a.build.errorRate) > uint64(float64(n-1)*a.build.errorRate)
}

// route answers the request and returns the status it sent.
func (a *app) route(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path == playsPath {
		return a.recordPlay(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return sendText(w, http.StatusNotImplemented, "unsupported method\n")
	}
	switch r.URL.Path {
	case healthPath:
		return sendJSON(w, http.StatusOK, health{Status: "ok", Instance: a.instance, Version: version, Service: serviceName})
	case websocketPath:
		return a.upgrade(w, r)
	}
	if track := strings.TrimPrefix(r.URL.Path, tracksPrefix); track != r.URL.Path && track != "" && !strings.Contains(track, "/") {
		return sendJSON(w, http.StatusOK, trackInfo{Instance: a.instance, Version: version, Track: track})
	}
	return sendText(w, http.StatusNotFound, "not found\n")
}

// recordPlay answers POST /api/v1/plays: 201 with the instance and the client's request id
// (?id=), which the access log line also carries, so a replayed POST shows up on two instances.
func (a *app) recordPlay(w http.ResponseWriter, r *http.Request) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return sendText(w, http.StatusMethodNotAllowed, "POST only\n")
	}
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxPlayBody)); err != nil {
		return sendText(w, http.StatusRequestEntityTooLarge, "body over 4096 bytes\n")
	}
	return sendJSON(w, http.StatusCreated, play{Instance: a.instance, ID: r.URL.Query().Get("id")})
}

type play struct {
	Instance string `json:"instance"`
	ID       string `json:"id"`
}

type health struct {
	Status   string `json:"status"`
	Instance string `json:"instance"`
	Version  string `json:"version"`
	Service  string `json:"service"`
}

type trackInfo struct {
	Instance string `json:"instance"`
	Version  string `json:"version"`
	Track    string `json:"track"`
}

type failure struct {
	Instance string `json:"instance"`
	Version  string `json:"version"`
	Error    string `json:"error"`
}

type greeting struct {
	Instance string `json:"instance"`
	Version  string `json:"version"`
}

type echo struct {
	Instance string `json:"instance"`
	Echo     string `json:"echo"`
}

func sendText(w http.ResponseWriter, status int, body string) int {
	return sendBody(w, status, "text/plain; charset=utf-8", []byte(body))
}

func sendJSON(w http.ResponseWriter, status int, value interface{}) int {
	body, err := json.Marshal(value)
	if err != nil {
		return sendText(w, http.StatusInternalServerError, "cannot encode the answer\n")
	}
	return sendBody(w, status, "application/json", append(body, '\n'))
}

func sendBody(w http.ResponseWriter, status int, contentType string, body []byte) int {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // a vanished client is not our error; HEAD bodies are dropped by net/http
	return status
}
