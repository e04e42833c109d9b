package sshpool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/pikaci/vmexec/shared"
)

// identities are the keys offered to one host, in the order ssh offers
// them: the agent's first, then the IdentityFile keys.
type identities struct {
	signers   []gossh.Signer
	tried     []string // what was offered, for the error when all are refused
	encrypted []string // identity files we could not use: encrypted, no agent
	problems  []string // identity files we could not read or parse
	agentConn net.Conn // closed once the handshake is over
}

func (id *identities) Close() {
	if id.agentConn != nil {
		id.agentConn.Close()
	}
}

// loadIdentities gathers the keys for h. It fails only when there is
// nothing to offer at all.
func loadIdentities(ctx context.Context, h *hostConfig, log hclog.Logger) (*identities, error) {
	id := &identities{}
	var fileSigners []gossh.Signer
	var filePubs []gossh.PublicKey // for IdentitiesOnly
	encryptedPub := map[string]gossh.PublicKey{}
	for _, path := range h.IdentityFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) || h.IdentityFilesSet {
				log.Warn("cannot read identity file", "host", h.Alias, "path", path, "error", err)
				id.problems = append(id.problems, fmt.Sprintf("%s: %v", path, err))
			}
			continue
		}
		signer, err := gossh.ParsePrivateKey(b)
		var pme *gossh.PassphraseMissingError
		switch {
		case errors.As(err, &pme):
			id.encrypted = append(id.encrypted, path)
			pub := pme.PublicKey
			if pub == nil {
				pub = readPublicKey(path + ".pub")
			}
			if pub != nil {
				filePubs = append(filePubs, pub)
				encryptedPub[path] = pub
			}
			continue
		case err != nil:
			log.Warn("cannot parse identity file", "host", h.Alias, "path", path, "error", err)
			id.problems = append(id.problems, fmt.Sprintf("%s: %v", path, err))
			continue
		}
		filePubs = append(filePubs, signer.PublicKey())
		// A certificate next to the key (path-cert.pub) is offered first,
		// as ssh does.
		if cert, ok := readPublicKey(path + "-cert.pub").(*gossh.Certificate); ok {
			if cs, err := gossh.NewCertSigner(cert, signer); err == nil {
				fileSigners = append(fileSigners, cs)
				id.tried = append(id.tried, path+"-cert.pub")
			}
		}
		fileSigners = append(fileSigners, signer)
		id.tried = append(id.tried, fmt.Sprintf("%s (%s)", path, gossh.FingerprintSHA256(signer.PublicKey())))
	}

	if h.IdentityAgent != "" {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", h.IdentityAgent)
		if err != nil {
			log.Warn("cannot reach ssh agent", "host", h.Alias, "socket", h.IdentityAgent, "error", err)
			id.problems = append(id.problems, fmt.Sprintf("agent %s: %v", h.IdentityAgent, err))
		} else {
			agentSigners, err := agent.NewClient(conn).Signers()
			if err != nil {
				conn.Close()
				log.Warn("cannot list ssh agent keys", "host", h.Alias, "socket", h.IdentityAgent, "error", err)
				id.problems = append(id.problems, fmt.Sprintf("agent %s: %v", h.IdentityAgent, err))
			} else {
				id.agentConn = conn
				var use []gossh.Signer
				for _, s := range agentSigners {
					if h.IdentitiesOnly && !containsKey(filePubs, s.PublicKey()) {
						continue
					}
					use = append(use, s)
				}
				if len(use) > 0 {
					id.tried = append([]string{fmt.Sprintf("%d agent key(s)", len(use))}, id.tried...)
				}
				id.signers = use
				// An encrypted file whose key the agent holds is covered.
				var still []string
				for _, path := range id.encrypted {
					if pub := encryptedPub[path]; pub == nil || !containsKey(publicKeys(agentSigners), pub) {
						still = append(still, path)
					}
				}
				id.encrypted = still
			}
		}
	}
	id.signers = append(id.signers, fileSigners...)
	if len(id.signers) > 0 {
		return id, nil
	}
	id.Close()
	if len(id.encrypted) > 0 {
		return nil, shared.Errorf(shared.ErrPermission, "remote.host", h.Alias,
			"ssh %s: identity file %s is encrypted and no ssh agent holds it (SSH_AUTH_SOCK %s); add it with ssh-add or use an unencrypted key",
			h.Describe(), strings.Join(id.encrypted, ", "), agentState(h))
	}
	msg := "no identity files found (" + strings.Join(h.IdentityFiles, ", ") + ")"
	if len(id.problems) > 0 {
		msg = strings.Join(id.problems, "; ")
	}
	return nil, shared.Errorf(shared.ErrPermission, "remote.host", h.Alias,
		"ssh %s: no key to authenticate with: %s; ssh agent: %s", h.Describe(), msg, agentState(h))
}

// refused is the error for a server that accepted none of our keys.
func (id *identities) refused(target, h *hostConfig, err error) error {
	extra := ""
	if len(id.encrypted) > 0 {
		extra = "; not tried (encrypted, no agent): " + strings.Join(id.encrypted, ", ")
	}
	via := ""
	if h != target {
		via = " (jump host for " + shared.Show(target.Alias) + ")"
	}
	return shared.Errorf(shared.ErrPermission, "remote.host", target.Alias,
		"ssh %s%s: permission denied for %s@%s: the server accepted none of our keys (tried %s%s): %w",
		shared.Show(h.Alias), via, h.User, h.Addr(), strings.Join(id.tried, ", "), extra, err)
}

func agentState(h *hostConfig) string {
	if h.IdentityAgent == "" {
		return "not set"
	}
	return h.IdentityAgent
}

func readPublicKey(path string) gossh.PublicKey {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(b)
	if err != nil {
		return nil
	}
	return k
}

func publicKeys(signers []gossh.Signer) []gossh.PublicKey {
	out := make([]gossh.PublicKey, len(signers))
	for i, s := range signers {
		out[i] = s.PublicKey()
	}
	return out
}

func containsKey(list []gossh.PublicKey, k gossh.PublicKey) bool {
	for _, x := range list {
		if keyEqual(x, k) {
			return true
		}
	}
	return false
}
