"""Data layer: EgoDex episodes (egodex, video, camera), synthetic EgoDex (synth), clips manifest (manifest)."""
