// Multipart uploads: multer streams file parts into temp files (never into memory); the temp files are removed when the response ends.
import type { RequestHandler } from 'express';
import multer, { type StorageEngine } from 'multer';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../store/blobs.ts';

/** A multer storage engine writing each file part to a fresh temp path of the blob store. */
function tempFileStorage(blobs: BlobStore): StorageEngine {
  return {
    _handleFile(_req, file, cb) {
      const path = blobs.tempPath();
      let size = 0;
      file.stream.on('data', (chunk: Buffer) => { size += chunk.length; });
      pipeline(file.stream, createWriteStream(path)).then(
        () => cb(null, { path, size }),
        (err: Error) => { void rm(path, { force: true }); cb(err); },
      );
    },
    _removeFile(_req, file, cb) {
      rm(file.path, { force: true }).then(() => cb(null), cb);
    },
  };
}

function multipartParser(blobs: BlobStore, maxBytes: number, files: number) {
  return multer({
    storage: tempFileStorage(blobs),
    limits: { fileSize: maxBytes, files, fields: 50, fieldSize: 64 * 1024, parts: 60 },
    // UTF-8 filenames (busboy would read them as latin1 otherwise).
    defParamCharset: 'utf8',
  });
}

/** Runs a multer handler, then removes every temp file it made when the response ends (committed uploads were renamed away). */
function removingTempFiles(parse: RequestHandler): RequestHandler {
  return (req, res, next) => {
    parse(req, res, (err?: unknown) => {
      const files = req.file ? [req.file] : Object.values((req.files ?? {}) as Record<string, Express.Multer.File[]>).flat();
      for (const { path } of files) res.on('close', () => void rm(path, { force: true }));
      next(err);
    });
  };
}

/**
 * Parses a multipart body with exactly one file part named `file` (in any position among the fields)
 * into `req.file` (a temp file) and `req.body` (the text fields). A second file part is a 400, a file
 * over `maxBytes` a 413; in both cases the partial temp file is already gone.
 */
export function singleFileUpload(blobs: BlobStore, maxBytes: number): RequestHandler {
  return removingTempFiles(multipartParser(blobs, maxBytes, 1).single('file'));
}

/** Like singleFileUpload for several file parts, each named in `names` and given at most once: `req.files[name][0]`. */
export function namedFilesUpload(blobs: BlobStore, maxBytes: number, names: readonly string[]): RequestHandler {
  return removingTempFiles(multipartParser(blobs, maxBytes, names.length).fields(names.map((name) => ({ name, maxCount: 1 }))));
}
