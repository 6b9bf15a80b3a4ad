package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RSAES_OAEP_SHA_1 is a Key Protect import algorithm clients may choose
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"hash"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// ImportToken is an instance's transport key for importing key material
// securely: the client encrypts material with the RSA public key (OAEP) and
// proves it holds the material by AES-GCM-encrypting the token's nonce.
type ImportToken struct {
	CreationDate         time.Time `json:"creationDate"`
	ExpirationDate       time.Time `json:"expirationDate"`
	MaxAllowedRetrievals int       `json:"maxAllowedRetrievals"`
	RemainingRetrievals  int       `json:"remainingRetrievals"`
	Payload              string    `json:"payload,omitempty"` // base64 of the PEM public key
	Nonce                string    `json:"nonce,omitempty"`
}

// Import token limits.
const (
	importTokenBits       = 2048
	importTokenMinSeconds = 300
	importTokenMaxSeconds = 86400
	importNonceSize       = 8
)

func importTokenAAD(guid string) []byte { return []byte("keyline-kms-import-token\x00" + guid) }

// CreateImportToken replaces the instance's import token with a new one.
func (s *Service) CreateImportToken(ctx context.Context, guid string, expirationSeconds, maxRetrievals int) (ImportToken, error) {
	const op = "kms.CreateImportToken"
	var out ImportToken
	if expirationSeconds == 0 {
		expirationSeconds = 600
	}
	if maxRetrievals == 0 {
		maxRetrievals = 1
	}
	err := s.onInstance(ctx, op, guid, auth.KMSImportTokenCreate, true, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		if expirationSeconds < importTokenMinSeconds || expirationSeconds > importTokenMaxSeconds {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'expiration' must be: between 300 and 86400 seconds").On("field", "expiration")
		}
		if maxRetrievals < 1 || maxRetrievals > 500 {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'maxAllowedRetrievals' must be: between 1 and 500").On("field", "maxAllowedRetrievals")
		}
		priv, err := rsa.GenerateKey(rand.Reader, importTokenBits)
		if err != nil {
			return errs.Internalf(op, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer seal.Wipe(der)
		pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			return errs.Internalf(op, err)
		}
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
		nonce := make([]byte, importNonceSize)
		rand.Read(nonce)
		now := s.clock.Now()
		out = ImportToken{CreationDate: now, ExpirationDate: now.Add(time.Duration(expirationSeconds) * time.Second),
			MaxAllowedRetrievals: maxRetrievals, RemainingRetrievals: maxRetrievals}
		_, err = tx.Exec(`INSERT INTO kms_import_tokens (instance_guid, private_key, public_key, nonce, creation_date, expiration_date,
			max_retrievals, remaining) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance_guid) DO UPDATE SET private_key = excluded.private_key,
			public_key = excluded.public_key, nonce = excluded.nonce, creation_date = excluded.creation_date,
			expiration_date = excluded.expiration_date, max_retrievals = excluded.max_retrievals, remaining = excluded.remaining`,
			in.GUID, s.master.Seal(der, importTokenAAD(in.GUID)), string(pubPEM), nonce, store.Time(now), store.Time(out.ExpirationDate),
			maxRetrievals, maxRetrievals)
		if err != nil {
			return errs.Internalf(op, err)
		}
		ev.ResponseData["expirationDate"] = store.Time(out.ExpirationDate)
		return nil
	})
	return out, err
}

type importTokenRow struct {
	sealedKey        []byte
	publicPEM        string
	nonce            []byte
	created, expires string
	max, remaining   int
}

func loadImportToken(tx *store.Tx, op, guid string, now time.Time) (importTokenRow, error) {
	var t importTokenRow
	err := tx.QueryRow(`SELECT private_key, public_key, nonce, creation_date, expiration_date, max_retrievals, remaining
		FROM kms_import_tokens WHERE instance_guid = ?`, guid).Scan(&t.sealedKey, &t.publicPEM, &t.nonce, &t.created, &t.expires, &t.max, &t.remaining)
	if store.IsNoRows(err) {
		return t, errs.E(op, errs.NotExist, "IMPORT_TOKEN_NOT_FOUND_ERR", "The instance has no import token: create one first")
	}
	if err != nil {
		return t, errs.Internalf(op, err)
	}
	if !now.Before(store.ParseTime(t.expires)) {
		return t, errs.E(op, errs.Conflict, "IMPORT_TOKEN_EXPIRED_ERR", "The import token has expired")
	}
	return t, nil
}

// GetImportToken returns the transport public key and nonce, counting one
// retrieval.
func (s *Service) GetImportToken(ctx context.Context, guid string) (ImportToken, error) {
	const op = "kms.GetImportToken"
	var out ImportToken
	err := s.onInstance(ctx, op, guid, auth.KMSImportTokenRead, true, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		t, err := loadImportToken(tx, op, in.GUID, s.clock.Now())
		if err != nil {
			return err
		}
		if t.remaining <= 0 {
			return errs.E(op, errs.Conflict, "IMPORT_TOKEN_EXPIRED_ERR", "The import token has no retrievals left")
		}
		if _, err := tx.Exec(`UPDATE kms_import_tokens SET remaining = remaining - 1 WHERE instance_guid = ?`, in.GUID); err != nil {
			return errs.Internalf(op, err)
		}
		out = ImportToken{CreationDate: store.ParseTime(t.created), ExpirationDate: store.ParseTime(t.expires),
			MaxAllowedRetrievals: t.max, RemainingRetrievals: t.remaining - 1,
			Payload: base64.StdEncoding.EncodeToString([]byte(t.publicPEM)), Nonce: base64.StdEncoding.EncodeToString(t.nonce)}
		return nil
	})
	return out, err
}

// importWithToken decrypts key material sent under the import token and
// checks the encrypted nonce proves the sender holds it.
func (s *Service) importWithToken(tx *store.Tx, op, guid, payload, encNonce, iv, alg string, extractable bool) ([]byte, error) {
	var h hash.Hash
	switch alg {
	case "", "RSAES_OAEP_SHA_256":
		h = sha256.New()
	case "RSAES_OAEP_SHA_1":
		h = sha1.New() //nolint:gosec
	default:
		return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'encryptionAlgorithm' must be: RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1").On("field", "encryptionAlgorithm")
	}
	t, err := loadImportToken(tx, op, guid, s.clock.Now())
	if err != nil {
		return nil, err
	}
	enc, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: base64 of key material encrypted with the import token").On("field", "payload")
	}
	der, err := s.master.Open(t.sealedKey, importTokenAAD(guid))
	if err != nil {
		return nil, errs.E(op, errs.Internal, "INCOMPLETE_METADATA_ERR", "Key metadata became corrupted").Because(err)
	}
	defer seal.Wipe(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	priv, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok {
		return nil, errs.E(op, errs.Internal, "INCOMPLETE_METADATA_ERR", "Key metadata became corrupted")
	}
	material, err := rsa.DecryptOAEP(h, nil, priv, enc, nil)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: key material encrypted with the import token").On("field", "payload")
	}
	if err := checkMaterial(op, material, extractable); err != nil {
		seal.Wipe(material)
		return nil, err
	}
	if err := checkNonce(op, material, encNonce, iv, t.nonce); err != nil {
		seal.Wipe(material)
		return nil, err
	}
	return material, nil
}

func checkNonce(op string, material []byte, encNonce, iv string, want []byte) error {
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != 12 {
		return errs.E(op, errs.Invalid, "INCORRECT_NONCE_IV_ERR", "The iv must be the base64 of the 12-byte GCM nonce used to encrypt the import token's nonce").On("field", "iv")
	}
	en, err := base64.StdEncoding.DecodeString(encNonce)
	if err != nil {
		return errs.E(op, errs.Invalid, "INCORRECT_NONCE_ERR", "The encrypted nonce does not match the import token's nonce").On("field", "encryptedNonce")
	}
	block, err := aes.NewCipher(material)
	if err != nil {
		return errs.E(op, errs.Invalid, "INCORRECT_NONCE_ERR", "The encrypted nonce does not match the import token's nonce").On("field", "encryptedNonce")
	}
	gcm, _ := cipher.NewGCM(block)
	got, err := gcm.Open(nil, ivb, en, nil)
	if err != nil || subtle.ConstantTimeCompare(got, want) != 1 {
		return errs.E(op, errs.Invalid, "INCORRECT_NONCE_ERR", "The encrypted nonce does not match the import token's nonce").On("field", "encryptedNonce")
	}
	return nil
}
