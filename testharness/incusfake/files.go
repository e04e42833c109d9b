package incusfake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The file API, GET and HEAD (notes §4, §9.7): a file's content, a
// directory's bare names in no order, a symlink's resolved target (never
// what it points to). Paths resolve inside the guest; a FIFO never answers
// until the client gives up, as a real one blocks the SFTP read.

func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	rt := s.runtime(project, name)
	if rt.running {
		rt.fs.setMounts(s.hostFSOf(inst), inst.put.Devices)
	}
	s.mu.Unlock()
	p := r.URL.Query().Get("path")
	if p == "" {
		writeError(w, http.StatusBadRequest, "Missing path argument")
		return
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a relative path is taken from /
	}
	canon, fi, err := rt.fs.resolve("lstat", p, false)
	if err != nil || fi == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	typ, mode := "file", fi.Mode().Perm()
	switch {
	case fi.IsDir():
		typ = "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		typ, mode = "symlink", 0o777
	}
	// The owner as the guest sees it: a file of the guest's own tree has
	// the owner it was given (chown); a file on a disk device shows as
	// root (a simplification: a real unprivileged container shows a host
	// id outside its map as 65534).
	uid, gid := 0, 0
	if be, _, _, _ := rt.fs.backend(canon); be == HostFS(rt.fs.root) {
		uid, gid = Owner(fi)
	}
	h := w.Header()
	mod := fi.ModTime().UTC().Truncate(time.Second)
	for _, prefix := range []string{"X-Incus-", "X-Lxd-"} {
		h.Set(prefix+"Uid", strconv.Itoa(uid))
		h.Set(prefix+"Gid", strconv.Itoa(gid))
		h.Set(prefix+"Mode", fmt.Sprintf("%04o", mode))
		h.Set(prefix+"Type", typ)
		h.Set(prefix+"Modified", mod.String())
	}
	switch typ {
	case "directory":
		ents, err := rt.fs.ReadDir(canon)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		if r.Method == http.MethodHead {
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			return
		}
		writeSync(w, http.StatusOK, "", names)
		return
	case "symlink":
		target, err := rt.fs.Readlink(canon)
		if err != nil {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		if !strings.HasPrefix(target, "/") {
			target = path.Join(path.Dir(canon), target)
		}
		target = path.Clean(target)
		serveBytes(w, r, path.Base(canon), mod, []byte(target))
		return
	}
	if fi.Mode()&fs.ModeNamedPipe != 0 {
		// A FIFO shows as a file and blocks until a writer comes, which
		// here is never: the request ends when the client gives up (or
		// the server shuts down).
		s.mu.Lock()
		shutdown := s.gs().shutdown
		s.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-shutdown:
		}
		return
	}
	var data []byte
	if fi.Mode().IsRegular() {
		f, err := rt.fs.OpenFile(canon, os.O_RDONLY, 0)
		if err != nil {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		data, err = io.ReadAll(f)
		f.Close()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	serveBytes(w, r, path.Base(canon), mod, data)
}

func serveBytes(w http.ResponseWriter, r *http.Request, name string, mod time.Time, data []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", "inline;filename="+name)
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.ServeContent(w, r, name, mod, bytes.NewReader(data))
}

// header reads an X-Incus-* request header, or its legacy X-LXD-* form.
func header(r *http.Request, name string) string {
	if v := r.Header.Get("X-Incus-" + name); v != "" {
		return v
	}
	return r.Header.Get("X-LXD-" + name)
}

// serveFilePush is POST and DELETE of /1.0/instances/<n>/files?path=.
// A form-urlencoded POST body is swallowed by the server's form parsing,
// as in Incus: the file comes out empty and the answer is still 200.
func (s *Server) serveFilePush(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	rt := s.runtime(project, name)
	if rt.running {
		rt.fs.setMounts(s.hostFSOf(inst), inst.put.Devices)
	}
	s.mu.Unlock()
	p := r.FormValue("path") // parses (and consumes) a form body
	if p == "" {
		writeError(w, http.StatusBadRequest, "Missing path argument")
		return
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	g := rt.fs
	if r.Method == http.MethodDelete {
		_, fi, err := g.resolve("lstat", p, false)
		if err != nil || fi == nil {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		if err := g.Remove(p); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("sftp: %q (SSH_FX_FAILURE)", "remove "+p+": "+strings.ToLower(strerror(err))))
			return
		}
		writeSync(w, http.StatusOK, "", map[string]any{})
		return
	}
	if _, parent, err := g.resolve("lstat", path.Dir(p), true); err != nil || parent == nil || !parent.IsDir() {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<30))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	mode := fs.FileMode(0o644)
	if v := header(r, "Mode"); v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid mode %q", v))
			return
		}
		mode = fs.FileMode(m).Perm()
	}
	owner := [2]int{-1, -1} // X-Incus-Uid and -Gid: the pushed file's owner
	for i, h := range []string{"Uid", "Gid"} {
		if v := header(r, h); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < -1 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid %s %q", strings.ToLower(h), v))
				return
			}
			owner[i] = n
		}
	}
	typ := header(r, "Type")
	switch typ {
	case "", "file":
		flag := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if header(r, "Write") == "append" {
			flag = os.O_WRONLY | os.O_CREATE | os.O_APPEND
		}
		f, err := g.OpenFile(p, flag, mode)
		if err == nil {
			_, err = f.Write(body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "sftp: "+strerror(err))
			return
		}
	case "directory":
		if header(r, "Mode") == "" {
			mode = 0o755
		}
		if fi, err := g.Stat(p); err == nil && fi.IsDir() {
			break
		}
		if err := g.Mkdir(p, mode); err != nil {
			writeError(w, http.StatusInternalServerError, "sftp: "+strerror(err))
			return
		}
	case "symlink":
		if len(body) == 0 {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		if err := g.Symlink(string(body), p); err != nil {
			writeError(w, http.StatusInternalServerError, "sftp: "+strerror(err))
			return
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Bad file type: %s", typ))
		return
	}
	if typ != "symlink" && (owner[0] >= 0 || owner[1] >= 0) {
		if err := g.Chown(p, owner[0], owner[1]); err != nil {
			writeError(w, http.StatusInternalServerError, "sftp: "+strerror(err))
			return
		}
	}
	writeSync(w, http.StatusOK, "", map[string]any{})
}

// strerror renders err as the C library does ("No such file or directory").
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:]
	}
	return err.Error()
}
