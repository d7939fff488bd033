"""`type: ssh` servers over paramiko: session.py (connect, host key, login), scp.py, sftp.py
and transfer.py (the SshTransfer the rest of the program uses). Loaded only for ssh servers:
paramiko is heavy."""
