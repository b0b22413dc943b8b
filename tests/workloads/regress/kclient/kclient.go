// Package kclient is a client-library-shaped wrapper for the regress
// workload: a typed client whose Get and PatchStatus build a request, send
// it through a Transport, and decode the JSON response, the way client-go's
// REST client does. The Transport here is in-process (an object store
// behind the same JSON encoding a server would use), so every CPU sample of
// a call lands under the caller's stack.
package kclient

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
)

// Object is the resource the client reads and patches.
type Object struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Owner      string            `json:"owner"`
	Labels     map[string]string `json:"labels"`
	Refs       []string          `json:"refs"`
	Spec       []byte            `json:"spec"`
	Generation int64             `json:"generation"`
	Status     Status            `json:"status"`
}

// Status is the part of an Object the controller writes.
type Status struct {
	Hash     string `json:"hash"`
	Score    int64  `json:"score"`
	Tier     int    `json:"tier"`
	Events   int    `json:"events"`
	Observed int64  `json:"observedGeneration"`
}

// Request is one API call: a verb, a path and an optional JSON body.
type Request struct {
	Verb string
	Path string
	Body []byte
}

// Response is the reply: a status code and a JSON body.
type Response struct {
	Code int
	Body []byte
}

// Transport sends a Request and returns its Response.
type Transport interface {
	RoundTrip(req *Request) (*Response, error)
}

// ErrNotFound is returned when the object does not exist.
var ErrNotFound = errors.New("kclient: not found")

// Client is the typed client.
type Client struct {
	T Transport
}

func objectPath(ns, name string) string {
	return "/apis/demo.io/v1/namespaces/" + ns + "/widgets/" + name
}

// Get reads one object.
func (c *Client) Get(ns, name string) (*Object, error) {
	resp, err := c.T.RoundTrip(&Request{Verb: "GET", Path: objectPath(ns, name)})
	if err != nil {
		return nil, err
	}
	if resp.Code == 404 {
		return nil, ErrNotFound
	}
	var o Object
	if err := json.Unmarshal(resp.Body, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// PatchStatus writes an object's status.
func (c *Client) PatchStatus(ns, name string, st *Status) error {
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	resp, err := c.T.RoundTrip(&Request{Verb: "PATCH", Path: objectPath(ns, name) + "/status", Body: body})
	if err != nil {
		return err
	}
	if resp.Code == 404 {
		return ErrNotFound
	}
	return nil
}

// Store is an in-process Transport: objects keyed by namespace/name,
// served with the JSON encoding a real API server would use.
type Store struct {
	mu      sync.Mutex
	objects map[string]*Object
}

// NewStore returns a store holding copies of objs.
func NewStore(objs []*Object) *Store {
	s := &Store{objects: make(map[string]*Object, len(objs))}
	for _, o := range objs {
		c := *o
		s.objects[o.Namespace+"/"+o.Name] = &c
	}
	return s
}

// RoundTrip serves GET on an object and PATCH on its status.
func (s *Store) RoundTrip(req *Request) (*Response, error) {
	rest := strings.TrimPrefix(req.Path, "/apis/demo.io/v1/namespaces/")
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || parts[1] != "widgets" {
		return &Response{Code: 404}, nil
	}
	key := parts[0] + "/" + parts[2]
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return &Response{Code: 404}, nil
	}
	switch {
	case req.Verb == "GET" && len(parts) == 3:
		body, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		return &Response{Code: 200, Body: body}, nil
	case req.Verb == "PATCH" && len(parts) == 4 && parts[3] == "status":
		var st Status
		if err := json.Unmarshal(req.Body, &st); err != nil {
			return &Response{Code: 400}, nil
		}
		o.Status = st
		return &Response{Code: 200}, nil
	}
	return &Response{Code: 405}, nil
}
