//! The Win32 calls: the current user's SID from the process token, a protected DACL
//! granting only that user full control, and a check of an existing DACL.

use std::ffi::c_void;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use std::ptr::null_mut;
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, ERROR_SUCCESS, GENERIC_ALL, GENERIC_READ, HANDLE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetNamedSecurityInfoW, SetNamedSecurityInfoW, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    AddAccessAllowedAceEx, CreateWellKnownSid, EqualSid, GetAce, GetLengthSid, GetTokenInformation,
    InitializeAcl, LookupAccountSidW, TokenUser, WinBuiltinAdministratorsSid, WinLocalSystemSid,
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_REVISION, CONTAINER_INHERIT_ACE,
    DACL_SECURITY_INFORMATION, INHERIT_ONLY_ACE, OBJECT_INHERIT_ACE, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_MAX_SID_SIZE,
    TOKEN_QUERY, TOKEN_USER, WELL_KNOWN_SID_TYPE,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_ALL_ACCESS, FILE_READ_DATA};
use windows_sys::Win32::System::SystemServices::ACCESS_ALLOWED_ACE_TYPE;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// A SID held in memory we own, aligned for the API.
struct Sid(Vec<u64>);

impl Sid {
    fn as_psid(&self) -> PSID {
        self.0.as_ptr() as PSID
    }
}

fn wide(p: &Path) -> Vec<u16> {
    p.as_os_str().encode_wide().chain(Some(0)).collect()
}

/// The SID of the user this process runs as.
fn current_user() -> io::Result<Sid> {
    // SAFETY: every pointer passed is either null (size query) or to a live buffer of
    // the length given; the token handle is closed on every path.
    unsafe {
        let mut token: HANDLE = null_mut();
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut len = 0u32;
        GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len);
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        let ok = GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), len, &mut len);
        let err = io::Error::last_os_error();
        CloseHandle(token);
        if ok == 0 {
            return Err(err);
        }
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        copy_sid(user.User.Sid)
    }
}

/// Copies a SID the system owns into memory we own.
unsafe fn copy_sid(sid: PSID) -> io::Result<Sid> {
    let n = GetLengthSid(sid) as usize;
    let mut out = vec![0u64; n.div_ceil(8)];
    std::ptr::copy_nonoverlapping(sid as *const u8, out.as_mut_ptr() as *mut u8, n);
    Ok(Sid(out))
}

fn well_known(kind: WELL_KNOWN_SID_TYPE) -> io::Result<Sid> {
    let mut out = vec![0u64; (SECURITY_MAX_SID_SIZE as usize).div_ceil(8)];
    let mut len = SECURITY_MAX_SID_SIZE;
    // SAFETY: `out` holds SECURITY_MAX_SID_SIZE bytes, the size passed in `len`.
    if unsafe { CreateWellKnownSid(kind, null_mut(), out.as_mut_ptr().cast(), &mut len) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sid(out))
}

/// Replaces the DACL of `path` with one entry: full control for the user this process
/// runs as, not inherited from the folder above (a folder passes it on to what is
/// created inside). Run at `init` on the home folder and on the secret key file.
pub fn restrict_to_owner(path: &Path, folder: bool) -> io::Result<()> {
    let user = current_user()?;
    // SAFETY: the ACL buffer is sized for the header plus one ACE carrying the SID,
    // and outlives the SetNamedSecurityInfoW call that reads it.
    unsafe {
        let sid_len = GetLengthSid(user.as_psid());
        let acl_len = (std::mem::size_of::<ACL>() + std::mem::size_of::<ACCESS_ALLOWED_ACE>())
            as u32
            - std::mem::size_of::<u32>() as u32
            + sid_len;
        let acl_len = acl_len.div_ceil(4) * 4;
        let mut acl = vec![0u64; (acl_len as usize).div_ceil(8)];
        let pacl = acl.as_mut_ptr() as *mut ACL;
        if InitializeAcl(pacl, acl_len, ACL_REVISION) == 0 {
            return Err(io::Error::last_os_error());
        }
        let inherit = if folder {
            OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE
        } else {
            0
        };
        if AddAccessAllowedAceEx(pacl, ACL_REVISION, inherit, FILE_ALL_ACCESS, user.as_psid()) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let name = wide(path);
        let e = SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            pacl,
            null_mut(),
        );
        if e != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(e as i32));
        }
    }
    Ok(())
}

/// Who besides the owner, the current user, SYSTEM and Administrators can read `path`,
/// as account names (`DOMAIN\\user`, else the SID string); empty when no one. A missing
/// DACL grants everyone everything and is reported as `Everyone (no ACL)`.
pub fn readable_by_others(path: &Path) -> io::Result<Vec<String>> {
    let user = current_user()?;
    let system = well_known(WinLocalSystemSid)?;
    let admins = well_known(WinBuiltinAdministratorsSid)?;
    let name = wide(path);
    let mut owner: PSID = null_mut();
    let mut dacl: *mut ACL = null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    let mut readers = Vec::new();
    // SAFETY: the out-pointers are valid; on success `sd` owns `owner` and `dacl`,
    // which are read only before `sd` is freed.
    unsafe {
        let e = GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION,
            &mut owner,
            null_mut(),
            &mut dacl,
            null_mut(),
            &mut sd,
        );
        if e != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(e as i32));
        }
        if dacl.is_null() {
            readers.push("Everyone (no ACL)".to_string());
        } else {
            for i in 0..u32::from((*dacl).AceCount) {
                let mut ace: *mut c_void = null_mut();
                if GetAce(dacl, i, &mut ace) == 0 {
                    readers.push(format!("ACL entry {i} (unreadable)"));
                    continue;
                }
                let header = &*(ace as *const ACE_HEADER);
                if u32::from(header.AceType) != ACCESS_ALLOWED_ACE_TYPE
                    || u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0
                {
                    continue; // deny entries, audit entries, entries only for children
                }
                let allowed = &*(ace as *const ACCESS_ALLOWED_ACE);
                if allowed.Mask & (FILE_READ_DATA | GENERIC_READ | GENERIC_ALL) == 0 {
                    continue;
                }
                let sid = &allowed.SidStart as *const u32 as PSID;
                let trusted = [owner, user.as_psid(), system.as_psid(), admins.as_psid()]
                    .iter()
                    .any(|t| !t.is_null() && EqualSid(sid, *t) != 0);
                if !trusted {
                    readers.push(account_name(sid));
                }
            }
        }
        LocalFree(sd);
    }
    Ok(readers)
}

/// `DOMAIN\\name` of a SID, or its string form (`S-1-1-0`) when it has no name here.
unsafe fn account_name(sid: PSID) -> String {
    let (mut name, mut domain) = ([0u16; 256], [0u16; 256]);
    let (mut n, mut d) = (256u32, 256u32);
    let mut kind = 0;
    if LookupAccountSidW(
        null_mut(),
        sid,
        name.as_mut_ptr(),
        &mut n,
        domain.as_mut_ptr(),
        &mut d,
        &mut kind,
    ) != 0
    {
        let name = String::from_utf16_lossy(&name[..n as usize]);
        let domain = String::from_utf16_lossy(&domain[..d as usize]);
        return if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        };
    }
    let mut text: *mut u16 = null_mut();
    if ConvertSidToStringSidW(sid, &mut text) == 0 {
        return "an unknown account".into();
    }
    let mut len = 0;
    while *text.add(len) != 0 {
        len += 1;
    }
    let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
    LocalFree(text.cast());
    s
}
