package submitter

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// GenerateEd25519 makes a new Ed25519 note key pair named name.
func GenerateEd25519(name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// GenerateECDSA makes a new ECDSA P-256 note key pair named name. The
// verifier key has the type-0x02 form of github.com/transparency-dev/formats
// (SPKI DER, key hash = first four bytes of its SHA-256); the private key
// mirrors it as PRIVATE+KEY+name+hash+base64(0x02 || PKCS#8 DER).
func GenerateECDSA(name string) (skey, vkey string, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return "", "", err
	}
	h := ecdsaKeyHash(spki)
	vkey = fmt.Sprintf("%s+%08x+%s", name, h, base64.StdEncoding.EncodeToString(append([]byte{algECDSA}, spki...)))
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, h, base64.StdEncoding.EncodeToString(append([]byte{algECDSA}, pkcs8...)))
	return skey, vkey, nil
}

// NewSigner parses a submitter's private key (Ed25519 or ECDSA P-256).
func NewSigner(skey string) (note.Signer, error) {
	skey = strings.TrimSpace(skey)
	if !strings.HasPrefix(skey, "PRIVATE+KEY+") {
		return nil, errors.New("malformed private key: want PRIVATE+KEY+name+hash+key")
	}
	alg, err := keyType(skey, 5)
	if err != nil {
		return nil, err
	}
	switch alg {
	case algEd25519:
		return note.NewSigner(skey)
	case algECDSA:
		return newECDSASigner(skey)
	}
	return nil, fmt.Errorf("private key type 0x%02x is not a submitter key type", alg)
}

type ecdsaSigner struct {
	name string
	hash uint32
	key  *ecdsa.PrivateKey
}

func newECDSASigner(skey string) (*ecdsaSigner, error) {
	f := strings.SplitN(skey, "+", 5)
	name, hashHex := f[2], f[3]
	b, err := decodeB64(f[4])
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(b[1:])
	if err != nil {
		return nil, fmt.Errorf("ECDSA private key: %w", err)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, errors.New("ECDSA private key: not a P-256 key")
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	h := ecdsaKeyHash(spki)
	if want, err := strconv.ParseUint(hashHex, 16, 32); err != nil || uint32(want) != h {
		return nil, errors.New("ECDSA private key: key hash does not match the key")
	}
	return &ecdsaSigner{name: name, hash: h, key: priv}, nil
}

func (s *ecdsaSigner) Name() string    { return s.name }
func (s *ecdsaSigner) KeyHash() uint32 { return s.hash }
func (s *ecdsaSigner) Sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return ecdsa.SignASN1(rand.Reader, s.key, d[:])
}

func ecdsaKeyHash(spki []byte) uint32 {
	h := sha256.Sum256(spki)
	return binary.BigEndian.Uint32(h[:4])
}

func decodeB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) < 2 {
		return nil, errors.New("malformed key: bad base64 key material")
	}
	return b, nil
}
