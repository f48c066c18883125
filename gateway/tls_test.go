package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeSelfSigned writes a certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "scaleout test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func TestTLSToClients(t *testing.T) {
	a := newTestBackend(t, "a")
	cert, key := writeSelfSigned(t)
	c := parse(t, oneUpstream("round-robin", fmt.Sprintf("tls: {cert: %q, key: %q}\n", cert, key), a))
	_, base, _ := runGateway(t, c)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https" + base[len("http"):] + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "a" || resp.TLS == nil {
		t.Errorf("over TLS: %d %q", resp.StatusCode, body)
	}
	// Plain HTTP to the TLS listener does not get through.
	if resp, err := http.Get(base + "/x"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the TLS listener")
		}
	}
}

func TestTLSBadFilesFailAtStart(t *testing.T) {
	a := newTestBackend(t, "a")
	cert, key := writeSelfSigned(t)
	c := parse(t, oneUpstream("round-robin", fmt.Sprintf("tls: {cert: %q, key: %q}\n", cert, key), a))
	// The files go bad between validation and start: New fails, before
	// any port is bound.
	os.WriteFile(cert, []byte("not a certificate"), 0o600)
	if _, err := New(c, Options{}); err == nil {
		t.Error("a gateway was built with a broken certificate")
	}
}
