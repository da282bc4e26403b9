{
  "targets": [
    {
      "target_name": "steved",
      "sources": ["native/session.cc", "native/fdpoll.cc", "native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "cflags_cc": ["<!@(pkg-config --cflags fuse3)", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "FUSE_USE_VERSION=35"]
    }
  ]
}
