//! Where checkpoints live: `state.url` (or a plain directory) turned into an object store
//! and the prefix under which pulse keeps its objects.
//!
//! A plain path and `file://` are the local file system, written with `fsync` on every
//! object and its directory, so a local checkpoint is as durable as it was before object
//! storage. `s3://`, `gs://` and `az://` (also `abfs://`, `abfss://`, `azure://`) take
//! their credentials, region and endpoint from the usual environment variables
//! (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! …), as every other tool against those stores does: pulse adds no configuration of its own
//! for secrets, so they never sit in `pulse.toml`. The environment is passed in (the binary
//! passes its own) rather than read here, so tests point a store at their own S3 server
//! without touching the process environment.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

/// Why a `state.url` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state location {location:?}: {reason}")]
pub struct BadLocation {
    pub location: String,
    pub reason: String,
}

/// An opened location: the store, the prefix of pulse's objects in it, and its name for
/// messages.
#[derive(Debug)]
pub(super) struct Opened {
    pub objects: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub display: String,
    /// The directory, for a local location (messages name files as before).
    pub dir: Option<PathBuf>,
}

/// A local directory; it need not exist yet (the first save creates it).
pub(super) fn local(dir: &Path) -> Opened {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let prefix = ObjectPath::from_absolute_path(&absolute)
        .unwrap_or_else(|_| ObjectPath::from(absolute.to_string_lossy().as_ref()));
    Opened {
        objects: Arc::new(LocalFileSystem::new().with_fsync(true)),
        prefix,
        display: absolute.display().to_string(),
        dir: Some(absolute),
    }
}

/// `location` is a URL (`scheme://…`) or a directory; `env` the environment variables.
pub(super) fn open(location: &str, env: &[(String, String)]) -> Result<Opened, BadLocation> {
    let bad = |reason: String| BadLocation {
        location: location.to_owned(),
        reason,
    };
    let Some((scheme, _)) = location.split_once("://") else {
        return Ok(local(Path::new(location)));
    };
    let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| bad("not an absolute local path".to_owned()))?;
            return Ok(local(&dir));
        }
        "s3" | "s3a" => configured(AmazonS3Builder::new(), env, "AWS_", |b, k, v| {
            b.with_config(k, v)
        })
        .with_url(location)
        .build()
        .map(|s| Arc::new(s) as _),
        "gs" => configured(
            GoogleCloudStorageBuilder::new(),
            env,
            "GOOGLE_",
            |b, k, v| b.with_config(k, v),
        )
        .with_url(location)
        .build()
        .map(|s| Arc::new(s) as _),
        "az" | "abfs" | "abfss" | "azure" => {
            configured(MicrosoftAzureBuilder::new(), env, "AZURE_", |b, k, v| {
                b.with_config(k, v)
            })
            .with_url(location)
            .build()
            .map(|s| Arc::new(s) as _)
        }
        other => {
            return Err(bad(format!(
                "unsupported scheme {other:?}: use a directory, file://, s3://, gs:// or az://"
            )));
        }
    };
    let objects = built.map_err(|e| bad(e.to_string()))?;
    // The bucket (container) is the URL's host; the rest of the path is pulse's prefix.
    let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
    Ok(Opened {
        objects,
        prefix,
        display: location.trim_end_matches('/').to_owned(),
        dir: None,
    })
}

/// A builder given every variable of `env` named `<prefix>…` that it knows (lower-cased,
/// as the builders' own `from_env` reads them); others are not its business.
fn configured<B, K: FromStr>(
    builder: B,
    env: &[(String, String)],
    prefix: &str,
    with: impl Fn(B, K, &str) -> B,
) -> B {
    env.iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase().parse().ok()?, value)))
        .fold(builder, |builder, (key, value)| with(builder, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_urls_and_unknown_schemes() {
        let open = |location| open(location, &[]);
        let dir = open("/var/lib/pulse").unwrap();
        assert_eq!(dir.prefix.as_ref(), "var/lib/pulse");
        assert_eq!(dir.dir.as_deref(), Some(Path::new("/var/lib/pulse")));
        let file = open("file:///var/lib/pulse").unwrap();
        assert_eq!((file.prefix, file.dir), (dir.prefix, dir.dir));
        let s3 = open("s3://bucket/pulse/prod/").unwrap();
        assert_eq!(s3.prefix.as_ref(), "pulse/prod");
        assert_eq!(s3.display, "s3://bucket/pulse/prod");
        assert!(s3.dir.is_none());
        // GCS and Azure are built in: their URLs open (no request is made until a save).
        let gs = super::open("gs://bucket/pulse", &[]).unwrap();
        assert_eq!(gs.prefix.as_ref(), "pulse");
        let azure_env = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "pulse"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "cHVsc2U="),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let az = super::open("az://container/pulse", &azure_env).unwrap();
        assert_eq!(az.prefix.as_ref(), "pulse");
        let error = open("ftp://host/x").unwrap_err().to_string();
        assert!(error.contains("unsupported scheme \"ftp\""), "{error}");
    }
}
