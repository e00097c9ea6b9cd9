{
  "targets": [
    {
      "target_name": "hpcore",
      "sources": [
        "native/addon.cc",
        "native/ptrace_ops.cc",
        "native/procfs.cc",
        "native/util.cc",
        "native/own_threads.cc",
        "native/memory.cc",
        "native/remote_syscall.cc",
        "native/resume.cc",
        "native/transaction.cc",
        "native/fence.cc",
        "native/fence_journal.cc",
        "native/stop_cuts_short.cc",
        "native/notify_socket.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"]
    }
  ]
}
