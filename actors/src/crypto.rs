//! Decryption of secrets the Wegent backend sends encrypted (`user.git_token`, a bot's
//! `api_key`): AES-256-CBC with PKCS#7 padding over base64, keyed by `GIT_TOKEN_AES_KEY` /
//! `GIT_TOKEN_AES_IV` (contract §6.2). A value that does not look encrypted, or does not
//! decrypt, is used as it is — exactly as the original does.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::Engine as _;

use crate::config::Secret;

/// The original's defaults (public test values: deployments must set their own).
pub const DEFAULT_KEY: &str = "12345678901234567890123456789012";
/// See [`DEFAULT_KEY`].
pub const DEFAULT_IV: &str = "1234567890123456";

/// Key and IV for [`TokenCipher::decrypt`].
#[derive(Clone, Debug)]
pub struct TokenCipher {
    key: Secret,
    iv: Secret,
}

impl Default for TokenCipher {
    fn default() -> Self {
        Self::new(DEFAULT_KEY, DEFAULT_IV)
    }
}

impl TokenCipher {
    /// A cipher with this key (32 bytes) and IV (16 bytes); other sizes decrypt nothing.
    pub fn new(key: &str, iv: &str) -> Self {
        Self {
            key: Secret::new(key),
            iv: Secret::new(iv),
        }
    }

    /// The plain value: decrypted when it is base64 of whole AES blocks that decrypt to
    /// UTF-8 text, else `value` unchanged.
    pub fn decrypt(&self, value: &str) -> String {
        self.try_decrypt(value).unwrap_or_else(|| value.to_string())
    }

    fn try_decrypt(&self, value: &str) -> Option<String> {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed == "***" {
            return None;
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .ok()?;
        if data.is_empty() || data.len() % 16 != 0 {
            return None;
        }
        let (key, iv) = (self.key.expose().as_bytes(), self.iv.expose().as_bytes());
        let dec = cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).ok()?;
        let plain = dec.decrypt_padded_vec_mut::<Pkcs7>(&data).ok()?;
        String::from_utf8(plain).ok().filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;

    fn encrypt(plain: &str) -> String {
        let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(
            DEFAULT_KEY.as_bytes(),
            DEFAULT_IV.as_bytes(),
        )
        .unwrap();
        let data = enc.encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn encrypted_values_are_decrypted_and_plain_ones_kept() {
        let c = TokenCipher::default();
        assert_eq!(c.decrypt(&encrypt("ghp_secret123")), "ghp_secret123");
        assert_eq!(
            c.decrypt("ghp_plainToken0123456789"),
            "ghp_plainToken0123456789"
        );
        assert_eq!(c.decrypt("***"), "***");
        // Valid base64 of whole blocks that is not ours: kept as it is.
        let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(c.decrypt(&other), other);
        let wrong_key = TokenCipher::new("x".repeat(32).as_str(), DEFAULT_IV);
        let enc = encrypt("tok");
        assert_eq!(wrong_key.decrypt(&enc), enc);
    }
}
