"""What a build starts from: the lock (every source by URL and hash), the
fetcher that lets no unverified byte into the download cache, the Debian
package files of the builder, and the state of the pipeline's own source.

Imports: the foundation, onlydocker.formats and onlydocker.cache (a source may
come from the remote cache's blobs).
"""
